# deepflows: DeepVariant-style pipeline. Config: config/config.yaml (schema: workflow/schemas/).
# Resources and executors: profiles/ (profiles/default is picked up automatically).

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/variants.smk"


rule all:
    input:
        manifest_path(),
    default_target: True


onsuccess:
    print(f"deepflows: done. Results for sample {SAMPLE!r} are in results/{SAMPLE}/; manifest: {manifest_path()}")
