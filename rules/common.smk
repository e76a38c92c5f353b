# Config loading and validation, input functions and wildcard constraints shared by all rule files.

import sys
from pathlib import Path

from deepflows.config import ConfigError, validate_merged

try:
    _validated = validate_merged(
        config,
        workflow.configfiles,
        getattr(workflow.config_settings, "overwrite_config", None),
        schema_path=Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml",
    )
except ConfigError as _err:
    # One line instead of Snakemake's traceback: the message already names the file and key.
    sys.exit(f"error: {_err}")
config.clear()
config.update(_validated)

SAMPLE = config["sample"]
SIMULATED = config["reads"]["path"] is None
MODE = "training" if config["make_examples"]["training"] else "calling"
NSHARDS = config["make_examples"]["shards"]
TRAINING = config["training_data"]  # rules/variants_train.smk
EVAL_SETS = sorted(TRAINING["eval_sets"]) if TRAINING["eval_regions"] else []


wildcard_constraints:
    sample=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    mode=r"calling|training",
    shard=r"\d{5}",
    nshards=r"\d{5}",
    chunk=r"\d{5}",  # training chunk
    evalset="|".join(EVAL_SETS) or "(?!)",  # only the configured evaluation sets ("(?!)" matches nothing)


def manifest_path(sample=SAMPLE, mode=MODE):
    """The gathered result of make_examples: the default target."""
    return f"results/{sample}/examples/{mode}/manifest.json"


def shard_paths(wildcards):
    return expand(
        "results/{sample}/examples/{mode}/examples-{shard:05d}-of-{nshards:05d}.zarr",
        sample=wildcards.sample,
        mode=wildcards.mode,
        shard=range(NSHARDS),
        nshards=NSHARDS,
    )


def _index_of(path):
    """The index files that must sit beside an indexed input."""
    if path.endswith(".cram"):
        return [f"{path}.crai"]
    if path.endswith(".bam"):
        return [f"{path}.bai"]
    if path.endswith(".vcf.gz"):
        return [f"{path}.tbi"]
    if path.endswith(".gz"):  # bgzipped FASTA
        return [f"{path}.fai", f"{path}.gzi"]
    return [f"{path}.fai"]


def reference_inputs(wildcards):
    fasta = config["reference"]["fasta"] or f"results/{wildcards.sample}/reference/demo.fa"
    return {"ref": fasta, "ref_index": _index_of(fasta)}


def simulate_inputs(wildcards):
    inputs = reference_inputs(wildcards)
    if config["reads"]["simulate"]["variants"] == "truth":
        inputs.update(truth=config["truth"]["vcf"], truth_index=_index_of(config["truth"]["vcf"]))
    return inputs


def reads_path(wildcards):
    return config["reads"]["path"] or f"results/{wildcards.sample}/reads/simulated.bam"


def truth_paths(wildcards):
    """(VCF, confident BED) for labels: the simulated truth for simulated reads, else the configured one."""
    if SIMULATED:
        prefix = f"results/{wildcards.sample}/reads/simulated"
        return f"{prefix}.truth.vcf.gz", f"{prefix}.confident.bed"
    vcf, bed = config["truth"]["vcf"], config["truth"]["confident_bed"]
    if not (vcf and bed):
        raise ValueError("training examples need truth.vcf and truth.confident_bed in the config")
    return vcf, bed


def make_examples_inputs(wildcards):
    reads = reads_path(wildcards)
    inputs = reference_inputs(wildcards) | {"reads": reads, "reads_index": _index_of(reads)}
    if wildcards.mode == "training":
        vcf, bed = truth_paths(wildcards)
        inputs.update(truth=vcf, truth_index=_index_of(vcf), confident=bed)
    if config["make_examples"]["regions_bed"]:
        inputs["regions_bed"] = config["make_examples"]["regions_bed"]
    return inputs


def simulate_region_args(wildcards):
    regions = config["reads"]["simulate"]["regions"]
    return ("--region " + " ".join(regions)) if regions else ""


def simulate_variant_args(wildcards, input):
    return f"--truth {input.truth}" if "truth" in input.keys() else "--random-variants"


def make_examples_region_args(wildcards, input):
    if "regions_bed" in input.keys():
        return f"--regions {input.regions_bed}"
    regions = config["make_examples"]["regions"]
    return ("--regions " + " ".join(regions)) if regions else ""


def label_args(wildcards, input):
    if wildcards.mode != "training":
        return ""
    return f"--truth {input.truth} --confident {input.confident}"


# --- Training data (rules/variants_train.smk) ---------------------------------------------------------------
# The plan (chunks, evaluation and tuning regions) is a pure function of the config and the reference's
# contig lengths: src/deepflows/genomics/training_plan.py.

from deepflows.errors import UserError
from deepflows.genomics.training_plan import plan_training, reference_lengths

_PLAN = {}


def training_plan():
    """Built when first needed (a run that never asks for training data never reads the .fai)."""
    if "plan" not in _PLAN:
        _PLAN["plan"] = plan_training(TRAINING, reference_lengths(config))
    return _PLAN["plan"]


if TRAINING["enabled"]:
    try:
        training_plan()
    except UserError as _err:
        sys.exit(f"error: {_err}")


def training_chunks():
    return [f"{i:05d}" for i in range(len(training_plan().chunks))]


def training_store_path(sample=SAMPLE):
    return f"results/{sample}/train/train.zarr"


def training_data_targets(sample=SAMPLE):
    """Everything target `training_data` builds: the shuffled store, and per evaluation set its kept BAM and
    truth plus the manifest of its calling examples."""
    targets = [training_store_path(sample), f"results/{sample}/train/train.json"]
    for name in EVAL_SETS:
        prefix = f"results/{sample}/eval/{name}"
        targets += [f"{prefix}/reads.bam", f"{prefix}/reads.truth.vcf.gz", f"{prefix}/examples/calling/manifest.json"]
    return targets


def default_targets():
    """The inputs of the default target `all`: the training data when training_data.enabled, else the examples
    manifest of the sample."""
    return training_data_targets() if TRAINING["enabled"] else [manifest_path()]


def training_simulate_inputs(wildcards):
    inputs = reference_inputs(wildcards)
    if TRAINING["variants"] == "truth":
        inputs.update(truth=config["truth"]["vcf"], truth_index=_index_of(config["truth"]["vcf"]))
    return inputs


def training_variant_args(wildcards, input):
    if "truth" in input.keys():
        return f"--truth {input.truth}"
    return f"--random-variants --variant-rate {TRAINING['variant_rate']}"


def _simulation_args(settings):
    return (
        f"--depth {settings['depth']} --read-length {settings['read_length']}"
        f" --error-rate-scale {settings['error_rate_scale']} --insert-mean {settings['insert_mean']}"
        f" --insert-sd {settings['insert_sd']} --aligner {settings['aligner']}"
    )


def train_chunk_region(wildcards):
    return str(training_plan().chunks[int(wildcards.chunk)])


def train_chunk_seed(wildcards):
    return TRAINING["seed"] + int(wildcards.chunk)


def train_simulation_args(wildcards):
    return _simulation_args(TRAINING["simulate"])


def training_shards(wildcards):
    return expand(
        "results/{sample}/train/chunks/{chunk}/examples.zarr", sample=wildcards.sample, chunk=training_chunks()
    )


def tune_region_args(wildcards):
    regions = [str(r) for r in training_plan().tune_regions]
    return f"--tune-regions {' '.join(regions)} --tune-margin {TRAINING['tune_margin']}" if regions else ""


def eval_regions(wildcards=None):
    return " ".join(str(r) for r in training_plan().eval_regions)


def eval_simulation_args(wildcards):
    settings = TRAINING["eval_sets"][wildcards.evalset]
    return f"{_simulation_args(settings)} --seed {settings['seed']}"


def eval_shard_paths(wildcards):
    n = TRAINING["eval_shards"]
    return expand(
        "results/{sample}/eval/{evalset}/examples/calling/examples-{shard:05d}-of-{nshards:05d}.zarr",
        sample=wildcards.sample,
        evalset=wildcards.evalset,
        shard=range(n),
        nshards=n,
    )
