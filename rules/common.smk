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


wildcard_constraints:
    sample=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    mode=r"calling|training",
    shard=r"\d{5}",
    nshards=r"\d{5}",


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
