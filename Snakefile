# deepflows: DeepVariant-style pipeline, reads to benchmarked calls.
# Config: config/config.yaml (schema: workflow/schemas/).
# Resources and executors: profiles/ (profiles/default is picked up automatically).

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/variants.smk"
include: "rules/variants_train.smk"
include: "rules/imaging.smk"
include: "rules/isl.smk"
include: "rules/segment.smk"
include: "rules/text.smk"
include: "rules/automl.smk"


rule all:
    input:
        default_targets(),
    default_target: True


onsuccess:
    print(f"deepflows: done. {success_message()}")
