# deepflows: DeepVariant-style pipeline. Config: config/config.yaml (schema: workflow/schemas/).
# Resources and executors: profiles/ (profiles/default is picked up automatically).

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/variants.smk"
include: "rules/variants_train.smk"


rule all:
    input:
        default_targets(),
    default_target: True


onsuccess:
    if TRAINING["enabled"]:
        print(f"deepflows: done. Training data for {SAMPLE!r}: {training_store_path()} (+ results/{SAMPLE}/eval/)")
    else:
        print(f"deepflows: done. Results for sample {SAMPLE!r} are in results/{SAMPLE}/; manifest: {manifest_path()}")
