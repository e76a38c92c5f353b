# Config loading and validation, input functions and wildcard constraints shared by all rule files.

import hashlib
import json
import re
import shlex
import sys
from pathlib import Path

from snakemake import __version__ as SNAKEMAKE_VERSION

from deepflows.config import (
    CACHE_DIR,
    ConfigError,
    check_input,
    check_inputs,
    index_files,
    input_paths,
    marks_duplicates,
    model_of,
    resolve_shipped,
    validate_merged,
)

try:
    _validated = validate_merged(
        config,
        workflow.configfiles,
        getattr(workflow.config_settings, "overwrite_config", None),
        schema_path=Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml",
    )
    # Every input the run reads is there (with the indexes no stage builds) before any job: one line naming
    # the config key, not Snakemake's missing-input report, nor a job failing hours in.
    check_inputs(_validated, workflow.basedir)
except ConfigError as _err:
    # One line instead of Snakemake's traceback: the message already names the file and key.
    sys.exit(f"error: {_err}")
config.clear()
config.update(_validated)
# The resolved config (defaults filled in) as one hash, written into the VCF header (provenance).
CONFIG_SHA256 = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()

SAMPLE = config["sample"]
SIMULATED = config["reads"]["path"] is None
MODE = "training" if config["make_examples"]["training"] else "calling"
REALIGN_ARG = "--realign" if config["make_examples"]["realign"] else "--no-realign"  # training and calling alike
NSHARDS = config["make_examples"]["shards"]
PRESET = config["preset"]  # deepflows.genomics.presets: make-examples --preset (targets, padding), default model
MARK_DUPLICATES = marks_duplicates(config)  # rule mark_duplicates runs before make_examples
BENCHMARK = config["benchmark"]
TRAINING = config["training_data"]  # rules/variants_train.smk
EVAL_SETS = sorted(TRAINING["eval_sets"]) if TRAINING["eval_regions"] else []


wildcard_constraints:
    sample=re.escape(SAMPLE),  # this config's sample only: another run's files (also_shuffle) are inputs, never remade
    mode=r"calling|training",
    shard=r"\d{5}",
    nshards=r"\d{5}",
    chunk=r"\d{5}",  # training chunk
    evalset="|".join(EVAL_SETS) or "(?!)",  # only the configured evaluation sets ("(?!)" matches nothing)


def manifest_path(sample=SAMPLE, mode=MODE):
    """The gathered result of make_examples: the default target."""
    return f"results/{sample}/examples/{mode}/manifest.json"


def _shard_paths(sample, mode, template="results/{sample}/examples/{mode}/examples-{shard}-of-{nshards}.zarr"):
    """One path per make_examples shard (the examples, or another per-shard output's `template`)."""
    return [
        template.format(sample=sample, mode=mode, shard=f"{i:05d}", nshards=f"{NSHARDS:05d}") for i in range(NSHARDS)
    ]


def shard_paths(wildcards):
    return _shard_paths(wildcards.sample, wildcards.mode)


def _index_of(path, kind, generated=False):
    """The index files to ask for beside an indexed input (kind: fasta, reads, vcf): all of them when a rule
    makes the file (make_reference, simulate make them with it), else only those rule download fetches.
    A configured file's other indexes are checked before the run (deepflows.config.check_inputs): asking for
    one that make-examples would build itself (.bai, .fai) would stop the run for want of a rule."""
    indexes = index_files(path, kind)
    return indexes if generated else [i for i in indexes if i.removeprefix(f"{CACHE_DIR}/") in DOWNLOADS]


def reference_inputs(wildcards):
    fasta = config["reference"]["fasta"] or f"results/{wildcards.sample}/reference/demo.fa"
    return {"ref": fasta, "ref_index": _index_of(fasta, "fasta", generated=not config["reference"]["fasta"])}


def _truth_inputs(vcf, generated=False):
    return {"truth": vcf, "truth_index": _index_of(vcf, "vcf", generated)}


def simulate_inputs(wildcards):
    inputs = reference_inputs(wildcards)
    if config["reads"]["simulate"]["variants"] == "truth":
        inputs.update(_truth_inputs(config["truth"]["vcf"]))
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


def markdup_path(sample):
    """The reads with duplicates flagged, as rule mark_duplicates writes them (temporary)."""
    return f"results/{sample}/reads/markdup.bam"


def examples_reads_path(wildcards):
    """The reads make_examples reads: with duplicates marked (make_examples.mark_duplicates, or the preset's), or
    as configured or simulated."""
    return markdup_path(wildcards.sample) if MARK_DUPLICATES else reads_path(wildcards)


def mark_duplicates_inputs(wildcards):
    reads = reads_path(wildcards)
    inputs = {"reads": reads}
    if reads.endswith(".cram"):  # only CRAM needs the reference to be read
        inputs |= reference_inputs(wildcards)
    return inputs


def mark_duplicates_ref_args(wildcards, input):
    """' --ref FASTA' for CRAM reads, else ''."""
    return f" --ref {shlex.quote(input.ref)}" if "ref" in input.keys() else ""


def make_examples_inputs(wildcards):
    reads = examples_reads_path(wildcards)
    generated = SIMULATED or MARK_DUPLICATES  # a rule makes the reads (and their index) then
    inputs = reference_inputs(wildcards) | {"reads": reads, "reads_index": _index_of(reads, "reads", generated)}
    if wildcards.mode == "training":
        vcf, bed = truth_paths(wildcards)
        inputs.update(_truth_inputs(vcf, SIMULATED), confident=bed)
    if config["make_examples"]["regions_bed"]:
        inputs["regions_bed"] = config["make_examples"]["regions_bed"]
    if config["targets"]:
        inputs["targets"] = config["targets"]
    return inputs


def make_examples_preset_args(wildcards, input):
    """'--preset NAME' and, when the config has capture targets, '--targets BED'."""
    targets = f" --targets {shlex.quote(input.targets)}" if "targets" in input.keys() else ""
    return f"--preset {PRESET}{targets}"


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


# --- Calling: call_variants -> postprocess -> benchmark (rules/variants.smk) -----------------------------

from deepflows.nn.model_dir import MODEL_JSON, model_description


def calls_path(sample=SAMPLE):
    return f"results/{sample}/calls/calls.vcf.gz"


def benchmark_summary_path(sample=SAMPLE):
    return f"results/{sample}/benchmark/summary.csv"


def model_dir():
    """`model` as given (null: the preset's shipped model), or found in the deepflows checkout (shipped models:
    resources/models/)."""
    return resolve_shipped(model_of(config), workflow.basedir)


def model_inputs(wildcards):
    """The model directory's files. A run whose default target calls variants had its model checked before it
    started; this catches the others (calls asked for by name) with the same one line."""
    directory = model_dir()
    try:
        check_input("model", directory, "model")
    except ConfigError as err:
        sys.exit(f"error: {err}")
    weights = model_description(directory)["weights"]
    return {"model_json": str(Path(directory, MODEL_JSON)), "weights": str(Path(directory, weights))}


def calling_shard_paths(wildcards):
    return _shard_paths(wildcards.sample, "calling")


def calling_manifest_path(wildcards):
    """Asked for only so that check_shards gates call_variants on a complete set of shards."""
    return manifest_path(wildcards.sample, "calling")


def model_path_arg(wildcards, input):
    return str(Path(input.model_json).parent)


def benchmark_truth(sample=SAMPLE):
    """(truth VCF, confident BED) to benchmark the calls against, or None: the simulated truth for simulated
    reads, else truth.vcf and truth.confident_bed when both are set."""
    if SIMULATED:
        prefix = f"results/{sample}/reads/simulated"
        return f"{prefix}.truth.vcf.gz", f"{prefix}.confident.bed"
    vcf, bed = config["truth"]["vcf"], config["truth"]["confident_bed"]
    return (vcf, bed) if vcf and bed else None


def benchmark_wanted():
    return BENCHMARK["enabled"] and benchmark_truth() is not None


def _strata():
    """[(name, BED)] of benchmark.stratify, in name order."""
    return sorted(BENCHMARK["stratify"].items())


def benchmark_inputs(wildcards):
    truth = benchmark_truth(wildcards.sample)
    if truth is None:  # only when the benchmark is asked for by name: the default target skips it
        sys.exit("error: truth.vcf, truth.confident_bed: both must be set to benchmark the calls of real reads")
    vcf, bed = truth
    calls = calls_path(wildcards.sample)
    inputs = reference_inputs(wildcards) | _truth_inputs(vcf, SIMULATED) | {"confident": bed}
    inputs |= {"calls": calls, "calls_index": f"{calls}.tbi"}
    inputs |= {f"stratify_{i}": path for i, (_, path) in enumerate(_strata())}
    if config["make_examples"]["regions_bed"]:
        inputs["regions_bed"] = config["make_examples"]["regions_bed"]
    if config["targets"]:
        inputs["targets"] = config["targets"]
    return inputs


def benchmark_region_args(wildcards, input):
    """Only the calling regions count: the calls cover no more than make_examples looked at; of an exome, its
    capture targets (unpadded, as hap.py's -T)."""
    regions = make_examples_region_args(wildcards, input)
    if "targets" in input.keys():
        regions = f"{regions} --targets {shlex.quote(input.targets)}".strip()
    return regions


def benchmark_stratify_args(wildcards, input):
    strata = [shlex.quote(f"{name}={getattr(input, f'stratify_{i}')}") for i, (name, _) in enumerate(_strata())]
    return ("--stratify " + " ".join(strata)) if strata else ""


# --- gVCF (config key gvcf): make_examples writes each shard's reference blocks, postprocess the gVCF ---------

GVCF = config["gvcf"]
GVCF_BLOCKS = "results/{sample}/examples/{mode}/gvcf-blocks-{shard}-of-{nshards}.tsv.gz"


def gvcf_path(sample=SAMPLE):
    return f"results/{sample}/calls/calls.g.vcf.gz"


def make_examples_gvcf_outputs():
    """make_examples' extra output when gvcf.enabled: temporary, only postprocess reads it."""
    return {"blocks": temp(GVCF_BLOCKS)} if GVCF["enabled"] else {}


def make_examples_gvcf_args(wildcards, output):
    """' --gvcf BLOCKS --gvcf-gq-binsize N' when gvcf.enabled, else '' (the command stays as it was)."""
    if not GVCF["enabled"]:
        return ""
    return f" --gvcf {shlex.quote(output.blocks)} --gvcf-gq-binsize {GVCF['gq_binsize']}"


def postprocess_gvcf_inputs(wildcards):
    if not GVCF["enabled"]:
        return {}
    return {"blocks": _shard_paths(wildcards.sample, "calling", GVCF_BLOCKS)}


def postprocess_gvcf_outputs():
    return {"gvcf": gvcf_path("{sample}"), "gvcf_tbi": f"{gvcf_path('{sample}')}.tbi"} if GVCF["enabled"] else {}


def postprocess_gvcf_args(wildcards, input, output):
    """' --gvcf-blocks BLOCKS... --gvcf-out G.VCF.gz' when gvcf.enabled, else ''."""
    if not GVCF["enabled"]:
        return ""
    return f" --gvcf-blocks {' '.join(map(shlex.quote, input.blocks))} --gvcf-out {shlex.quote(output.gvcf)}"


def calling_targets(sample=SAMPLE):
    """The calls (and their benchmark, when there is a truth to compare with)."""
    targets = [calls_path(sample), f"{calls_path(sample)}.tbi"]
    if GVCF["enabled"]:
        targets += [gvcf_path(sample), f"{gvcf_path(sample)}.tbi"]
    if benchmark_wanted():
        targets += [benchmark_summary_path(sample), f"results/{sample}/benchmark/gq_calibration.png"]
    return targets + [f"results/{sample}/run_times.tsv", f"results/{sample}/provenance.tsv"]


# The `benchmark:` file of each calling rule; rule run_times reads them back.
STAGE_BENCHMARKS = {
    "simulate": "benchmarks/{sample}/simulate.tsv",
    "mark_duplicates": "benchmarks/{sample}/mark_duplicates.tsv",
    "make_examples": "benchmarks/{sample}/make_examples/{mode}/{shard}-of-{nshards}.tsv",
    "call_variants": "benchmarks/{sample}/call_variants.tsv",
    "postprocess": "benchmarks/{sample}/postprocess.tsv",
    "benchmark": "benchmarks/{sample}/benchmark.tsv",
}


def run_time_benchmarks(wildcards):
    """The `benchmark:` files of the sample's calling jobs, keyed `{stage}_{i}` (stage = the rule)."""
    sample = wildcards.sample
    files = {"simulate_0": STAGE_BENCHMARKS["simulate"].format(sample=sample)} if SIMULATED else {}
    if MARK_DUPLICATES:
        files["mark_duplicates_0"] = STAGE_BENCHMARKS["mark_duplicates"].format(sample=sample)
    shards = _shard_paths(sample, "calling", STAGE_BENCHMARKS["make_examples"])
    files.update({f"make_examples_{i}": path for i, path in enumerate(shards)})
    for stage in ("call_variants", "postprocess") + (("benchmark",) if benchmark_wanted() else ()):
        files[f"{stage}_0"] = STAGE_BENCHMARKS[stage].format(sample=sample)
    return files


def run_time_args(wildcards, input):
    return " ".join(shlex.quote(f"{key.rsplit('_', 1)[0]}={path}") for key, path in input.items())


def _pass_f1(summary_json):
    """'SNP 0.9876, INDEL 0.9123': the PASS F1 of the whole benchmark, or '' if unreadable."""
    import json

    try:
        rows = json.loads(Path(summary_json).read_text())["summary"]
        f1 = {r["Type"]: r["METRIC.F1_Score"] for r in rows if r["Filter"] == "PASS" and r.get("Subset", "*") == "*"}
        return ", ".join(f"{t} {f1[t]:.4f}" if f1[t] is not None else f"{t} n/a" for t in ("SNP", "INDEL"))
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def success_message():
    """What `onsuccess` prints: where the results of the default target are."""
    if TRAINING["enabled"]:
        return f"Training data for {SAMPLE!r}: {training_store_path()} (+ results/{SAMPLE}/eval/)"
    if MODE == "training" or not Path(calls_path()).exists():
        return f"Results for sample {SAMPLE!r} are in results/{SAMPLE}/; manifest: {manifest_path()}"
    message = f"Calls for sample {SAMPLE!r}: {calls_path()} (+ .tbi)"
    summary = Path(benchmark_summary_path())
    if summary.exists():
        f1 = _pass_f1(summary.with_suffix(".json"))
        message += f"; benchmark: {summary}" + (f" (PASS F1: {f1})" if f1 else "")
    return message


def label_args(wildcards, input):
    if wildcards.mode != "training":
        return ""
    return f"--truth {input.truth} --confident {input.confident}"


# --- Training data (rules/variants_train.smk) ---------------------------------------------------------------
# The plan (chunks, evaluation and tuning regions) is a pure function of the config and the reference's
# contig lengths: src/deepflows/genomics/simulate/training_plan.py.

from deepflows.errors import UserError
from deepflows.genomics.simulate.training_plan import plan_training, reference_lengths

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
    """Chunk ids: every region of the plan `replicates` times (chunk j simulates region j mod regions)."""
    return [f"{i:05d}" for i in range(len(training_plan().chunks) * TRAINING["replicates"])]


def training_store_path(sample=SAMPLE):
    return f"results/{sample}/train/train.zarr"


def trained_model_path(sample=SAMPLE):
    """Where rule train_model exports the model; its workdir (checkpoints, metrics) is the parent."""
    return f"results/{sample}/train/run/model"


def _calibration_sets():
    names = config["train"]["calibration_sets"]
    for name in names:
        settings = TRAINING["eval_sets"].get(name) if TRAINING["eval_regions"] else None
        if settings is None or settings["regions"] != "tune":
            sys.exit(f"error: config key train.calibration_sets: {name!r} is not one of training_data.eval_sets "
                     f"with `regions: tune` (a model is never calibrated on evaluation data)")  # fmt: skip
    return names


CALIBRATION_SETS = _calibration_sets()


def calibrated_model_path(sample=SAMPLE):
    """Where rule calibrate_model writes the trained model with its call temperature."""
    return f"results/{sample}/train/calibrated/model"


def final_model_path(sample=SAMPLE):
    """Target `trained_model`: the calibrated model when calibration sets are set, else the trained one."""
    return calibrated_model_path(sample) if CALIBRATION_SETS else trained_model_path(sample)


def calibration_inputs(wildcards):
    prefixes = [f"results/{wildcards.sample}/eval/{name}" for name in CALIBRATION_SETS]
    return {
        **reference_inputs(wildcards),
        "model": trained_model_path(wildcards.sample),
        "probs": [f"{p}/probs.zarr" for p in prefixes],
        "truth": [f"{p}/reads.truth.vcf.gz" for p in prefixes],
        "confident": [f"{p}/reads.confident.bed" for p in prefixes],
    }


def calibration_set_args(wildcards, input):
    return " ".join(f"--set {shlex.quote(p)} {shlex.quote(t)} {shlex.quote(c)}"
                    for p, t, c in zip(input.probs, input.truth, input.confident))  # fmt: skip


def training_data_targets(sample=SAMPLE):
    """Everything target `training_data` builds: the shuffled store, and per evaluation set its kept BAM and
    truth plus the manifest of its calling examples."""
    targets = [training_store_path(sample), f"results/{sample}/train/train.json"]
    for name in EVAL_SETS:
        prefix = f"results/{sample}/eval/{name}"
        targets += [f"{prefix}/reads.bam", f"{prefix}/reads.truth.vcf.gz", f"{prefix}/examples/calling/manifest.json"]
    return targets


def default_targets():
    """The inputs of the default target `all`: the training data when training_data.enabled; the labelled
    examples' manifest when make_examples.training; else the sample's calls and, when there is a truth, their
    benchmark."""
    if TRAINING["enabled"]:
        return training_data_targets()
    return [manifest_path()] if MODE == "training" else calling_targets()


def simulation_settings(wildcards):
    """The read simulation of a training chunk (its simulate_cycle entry over `simulate`) or of an eval set."""
    if "evalset" in wildcards.keys():
        return TRAINING["eval_sets"][wildcards.evalset]
    cycle = TRAINING["simulate_cycle"]
    return TRAINING["simulate"] | (cycle[int(wildcards.chunk) % len(cycle)] if cycle else {})


def _captured(wildcards):
    return "capture" in simulation_settings(wildcards)


def _targets_path(wildcards):
    if "evalset" in wildcards.keys():
        return f"results/{wildcards.sample}/eval/{wildcards.evalset}/targets.bed"
    return f"results/{wildcards.sample}/train/chunks/{wildcards.chunk}/targets.bed"


def training_simulate_inputs(wildcards):
    inputs = reference_inputs(wildcards)
    if TRAINING["variants"] == "truth":
        inputs.update(_truth_inputs(config["truth"]["vcf"]))
    if _captured(wildcards):
        inputs["targets"] = _targets_path(wildcards)
    if simulation_settings(wildcards)["aligner"] == "bwa":
        inputs["bwa_index"] = f"results/{wildcards.sample}/reference/bwa/reference.bwt"
    return inputs


def training_variant_args(wildcards, input):
    if "truth" in input.keys():
        return f"--truth {input.truth}"
    return f"--random-variants --variant-rate {TRAINING['variant_rate']}"


def _flag(key, value):
    value = " ".join(map(str, value)) if isinstance(value, list) else value
    return f" --{key.replace('_', '-')} {value}"


# Optional simulate settings -> flags; passed only when set, so configs without them keep their exact commands.
_OPTIONAL_FLAGS = ("hotspot_rate", "hotspot_beta", "homopolymer_slip_rate", "gc_bias", "duplicate_rate",
                   "pcr_stutter_rate", "simulator", "art_profile", "quality_bins")  # fmt: skip
_CAPTURE_FLAGS = {"depth_sigma": "target_depth_sigma", "off_target_fraction": "off_target_fraction"}


def _simulation_args(settings):
    optional = "".join(_flag(key, settings[key]) for key in _OPTIONAL_FLAGS if key in settings)
    capture = settings.get("capture", {})
    optional += "".join(_flag(flag, capture[key]) for key, flag in _CAPTURE_FLAGS.items() if key in capture)
    if settings.get("mark_duplicates"):
        optional += " --mark-duplicates"
    return (
        f"--depth {settings['depth']} --read-length {settings['read_length']}"
        f" --error-rate-scale {settings['error_rate_scale']} --insert-mean {settings['insert_mean']}"
        f" --insert-sd {settings['insert_sd']} --aligner {settings['aligner']}{optional}"
    )


def simulate_file_args(wildcards, input):
    """simulate's --targets for a captured (exome-like) chunk or set, --bwa-index for reads aligned by bwa mem."""
    args = []
    if "targets" in input.keys():
        args.append(f"--targets {shlex.quote(input.targets)}")
    if "bwa_index" in input.keys():
        args.append(f"--bwa-index {shlex.quote(input.bwa_index.removesuffix('.bwt'))}")
    return " ".join(args)


def capture_fraction(wildcards):
    return simulation_settings(wildcards)["capture"]["fraction"]


def preset_args(wildcards):
    """make-examples of a captured chunk or set: the exome preset over its targets."""
    return f"--preset wes --targets {shlex.quote(_targets_path(wildcards))}" if _captured(wildcards) else ""


def preset_inputs(wildcards):
    return {"targets": _targets_path(wildcards)} if _captured(wildcards) else {}


def train_chunk_region(wildcards):
    chunks = training_plan().chunks
    return str(chunks[int(wildcards.chunk) % len(chunks)])


def train_chunk_seed(wildcards):
    return TRAINING["seed"] + int(wildcards.chunk)


def train_simulation_args(wildcards):
    return _simulation_args(simulation_settings(wildcards))


def training_shards(wildcards):
    """This run's chunk shards, then those of other runs that `also_shuffle` names."""
    own = expand("results/{sample}/train/chunks/{chunk}/examples.zarr", sample=wildcards.sample, chunk=training_chunks())
    return own + INCLUDED_SHARDS


def _included_shards():
    """The shards matched by each `also_shuffle` glob (in order, sorted), each glob matching at least one."""
    shards = []
    for pattern in TRAINING["also_shuffle"]:
        matched = sorted(str(p) for p in Path().glob(pattern) if (p / "zarr.json").is_file())
        if not matched:
            sys.exit(f"error: config key training_data.also_shuffle: {pattern!r} matches no example shard "
                     f"(make that run's training data first)")  # fmt: skip
        shards += matched
    return shards


INCLUDED_SHARDS = _included_shards() if TRAINING["enabled"] else []


def tune_region_args(wildcards):
    regions = [str(r) for r in training_plan().tune_regions]
    return f"--tune-regions {' '.join(regions)} --tune-margin {TRAINING['tune_margin']}" if regions else ""


def eval_regions(wildcards):
    """The regions an eval set simulates and calls: the evaluation regions, or the tuning regions."""
    plan = training_plan()
    tune = TRAINING["eval_sets"][wildcards.evalset]["regions"] == "tune"
    return " ".join(str(r) for r in (plan.tune_regions if tune else plan.eval_regions))


def eval_simulation_args(wildcards):
    settings = simulation_settings(wildcards)
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


# --- Downloads into resources/cache/ (rules/download.smk) ---------------------------------------------------
# download.files names what the download rule may fetch; the path keys of the config (reference.fasta,
# reads.path, truth.*, ...) say what the run reads. A path key pointing at resources/cache/NAME makes
# Snakemake fetch entry NAME (and the index entries beside it); a path key pointing elsewhere (a local copy)
# leaves the entry unused.

DOWNLOADS = config["download"]["files"]


def download_name_pattern():
    """Wildcard constraint of the download rule, exactly the configured cache names (nothing else is claimed)."""
    import re

    return "|".join(re.escape(name) for name in sorted(DOWNLOADS)) or "(?!)"


# The suffixes of index files, longest first: an index is fetched after its data file.
INDEX_SUFFIXES = (".fai", ".gzi", ".bai", ".crai", ".csi", ".tbi")


def download_data_of_index(wildcards):
    """An index is downloaded after its data file when both are downloaded: the stages refuse an index older
    than its data (a stale one), so it must not land first."""
    name = wildcards.cached
    for suffix in INDEX_SUFFIXES:
        data = name.removesuffix(suffix)
        if name.endswith(suffix) and data in DOWNLOADS:
            return [f"resources/cache/{data}"]
    return []


def download_url(wildcards):
    return DOWNLOADS[wildcards.cached]["url"]


def download_checksum_args(wildcards):
    """--sha256/--md5 of the entry; --allow-unverified only when download.allow_unverified is set (without a
    checksum `deepflows download` then refuses the file with one line)."""
    entry = DOWNLOADS[wildcards.cached]
    args = [f"--{name} {entry[name]}" for name in ("sha256", "md5") if entry[name]]
    if config["download"]["allow_unverified"]:
        args.append("--allow-unverified")
    return " ".join(args)


def cached_inputs():
    """{path under resources/cache/: config key} for every input of the run that rule download fetches,
    index files beside them included."""
    found = {}
    for key, path, kind in input_paths(config, workflow.basedir):
        for each in [path, *_index_of(path, kind)]:
            if each.startswith(f"{CACHE_DIR}/") and not Path(each).exists():
                found[each.removeprefix(f"{CACHE_DIR}/")] = key
    return found


def _warn_unverified_downloads():
    """A file to fetch without a checksum gets a warning up front: the download rule refuses it unless
    download.allow_unverified (a cache path without an entry stopped the run already: check_inputs)."""
    unverified = [name for name in cached_inputs() if not (DOWNLOADS[name]["sha256"] or DOWNLOADS[name]["md5"])]
    if unverified and not config["download"]["allow_unverified"]:
        print(
            f"deepflows: warning: download.files: {len(unverified)} file(s) without sha256 or md5"
            f" ({', '.join(unverified[:3])}{', ...' if len(unverified) > 3 else ''}): the download rule refuses them;"
            " fill in the checksums from the provider's checksum files, or set download.allow_unverified: true",
            file=sys.stderr,
        )


_warn_unverified_downloads()


# --- In Silico Labeling (rules/isl.smk) --------------------------------------------------------------------

ISL = config["isl"]
ISL_SPLIT_ARGS = f"--test-quadrant {ISL['test_quadrant']} --tune-band {ISL['tune_band']}"
ISL_SHARDS = {"train": ISL["train_shards"], "tune": ISL["tune_shards"]}


def isl_dir(well=ISL["well"]):
    return f"results/isl/{well}"


def isl_well_files(wildcards):
    """The well's phase-contrast planes and targets, found by their file names in `isl.data`."""
    from deepflows.errors import UserError
    from deepflows.imaging.isl.well import find_well_files

    if not ISL["data"]:
        sys.exit("error: isl.data: must be set to run In Silico Labeling (the well's folder of PNGs)")
    try:
        planes, targets = find_well_files(ISL["data"])
    except UserError as err:
        sys.exit(f"error: isl.data: {err}")
    return {"planes": [str(p) for p in planes], "targets": [str(p) for p in targets.values()]}


def isl_patch_paths(well, split):
    n = ISL_SHARDS[split]
    return [f"{isl_dir(well)}/patches/{split}-{i:05d}-of-{n:05d}.zarr" for i in range(n)]


def isl_train_patches(wildcards):
    return isl_patch_paths(wildcards.well, "train")


def isl_tune_patches(wildcards):
    return isl_patch_paths(wildcards.well, "tune")


def isl_shard_arg(wildcards):
    """`--shard i/n` of a patch shard."""
    return f"{int(wildcards.shard)}/{int(wildcards.nshards)}"


def isl_patches_args(wildcards):
    """Train shards draw `patches_per_shard` augmented patches; a tune shard takes its share of the band's grid."""
    if wildcards.split == "train":
        return f"--patches {ISL['patches_per_shard']} --seed {ISL['seed']}"
    return ""


# the two networks the workflow evaluates: the ISL model, and the U-Net baseline (L2); per network, the config
# keys of its training config and of a given (shipped) model
ISL_NETS = {"fovea": ("model_config", "model"), "unet": ("unet_config", "unet_model")}


def isl_trained_model_path(well=ISL["well"], net="{net}"):
    """Where rule isl_train exports a network; its workdir (checkpoints, metrics) is beside it."""
    return f"{isl_dir(well)}/train/{net}/model"


def isl_train_config(wildcards):
    return resolve_shipped(ISL[ISL_NETS[wildcards.net][0]], workflow.basedir)


def isl_model_path(wildcards):
    """The network that predicts: the given model (`isl.model`, `isl.unet_model`) when set, else the one
    trained on this well."""
    given = ISL[ISL_NETS[wildcards.net][1]]
    if given:
        return resolve_shipped(given, workflow.basedir)
    return isl_trained_model_path(wildcards.well, wildcards.net)


# --- Segmentation and the AR microscope (rules/segment.smk) ---------------------------------------------------

SEGMENT = config["segment"]
SEGMENT_HEADS = ("v3plus", "v3", "fcn")
# the task entries, with the defaults of their optional keys (JSON Schema does not fill defaults in
# additionalProperties)
SEGMENT_TASKS = {
    task: {"heads": list(SEGMENT_HEADS), "config": "config/model/segment_v3plus.yaml", "models": {},
           "tolerance": 2.0, "band": 4.0} | (entry or {})
    for task, entry in SEGMENT["tasks"].items()
}  # fmt: skip


def segment_dir(task):
    return f"results/segment/{task}"


def segment_task_sources(wildcards):
    """The shared data files a task is built from (deepflows.imaging.segment.tasks), so a changed file reruns it."""
    from deepflows.imaging.segment.tasks import task_sources

    if not SEGMENT["data"]:
        sys.exit("error: segment.data: must be set (the shared data folder holding imaging/...)")
    return [str(p) for p in task_sources(wildcards.task, SEGMENT["data"])]


def segment_trained_model_path(task, head):
    """Where rule segment_train exports a model; its workdir (checkpoints, metrics) is beside it."""
    return f"{segment_dir(task)}/train/{head}/model"


def segment_train_config(wildcards):
    return resolve_shipped(SEGMENT_TASKS[wildcards.task]["config"], workflow.basedir)


def _segment_model(task, head):
    """The given model of a head (`segment.tasks.{task}.models.{head}`) when set, else the one trained here."""
    given = SEGMENT_TASKS[task]["models"].get(head)
    return resolve_shipped(given, workflow.basedir) if given else segment_trained_model_path(task, head)


def segment_models(wildcards):
    return [_segment_model(wildcards.task, head) for head in SEGMENT_TASKS[wildcards.task]["heads"]]


def segment_model_args(wildcards):
    """--models NAME=DIR ... of segment-eval."""
    return " ".join(f"{head}={_segment_model(wildcards.task, head)}" for head in SEGMENT_TASKS[wildcards.task]["heads"])


def segment_arm_model(wildcards):
    arm = SEGMENT["arm"]
    return resolve_shipped(arm["model"], workflow.basedir) if arm["model"] else _segment_model("he_regions", "v3plus")


def segment_targets(wildcards):
    """Every task's evaluation, the H&E model's field-of-view AUC, and the AR microscope's recorded session when
    a slide is given."""
    targets = [f"{segment_dir(task)}/evaluation" for task in SEGMENT_TASKS]
    targets += [f"{segment_dir('he_regions')}/fov"] if "he_regions" in SEGMENT_TASKS else []
    return targets + (["results/arm/session.mp4"] if SEGMENT["arm"]["slide"] else [])


# --- Talk to Books' sentence index (rules/text.smk) ---------------------------------------------------------

TEXT = config["text"]


def _text_books():
    """{book id: book entry} of text.books (deepflows.text.books.corpus), in the config's order."""
    from deepflows.errors import UserError
    from deepflows.text.books.corpus import resolve_books

    try:
        return {book["book_id"]: book for book in resolve_books(TEXT["books"])}
    except UserError as err:
        sys.exit(f"error: {err}")


TEXT_BOOKS = _text_books()


def text_dir(corpus=TEXT["corpus"]):
    return f"results/text/{corpus}"


def text_index_path(corpus=TEXT["corpus"]):
    return f"{text_dir(corpus)}/index"


def text_book_file(wildcards):
    return TEXT_BOOKS[wildcards.book]["path"]


def text_book_args(wildcards):
    """--book-id, and --title/--author where the config gives them (else text-sentences finds them)."""
    book = TEXT_BOOKS[wildcards.book]
    args = [f"--book-id {shlex.quote(book['book_id'])}"]
    args += [f"--{key} {shlex.quote(book[key])}" for key in ("title", "author") if book[key] is not None]
    return " ".join(args)


def text_model_inputs(wildcards):
    return {"model": resolve_shipped(TEXT["model"], workflow.basedir)} if TEXT["model"] else {}


def text_model_arg(wildcards, input):
    return f"--model {shlex.quote(input.model)}" if TEXT["model"] else ""


def text_vector_paths(wildcards):
    return [f"{text_dir(wildcards.corpus)}/vectors/{book}.zarr" for book in TEXT_BOOKS]


def text_approx_args(wildcards):
    """text-index's approximate-index options from text.approx."""
    approx = TEXT["approx"]
    args = [f"--approx {approx['kind']}", f"--min-approx {approx['min_sentences']}", f"--pq-m {approx['m']}",
            f"--pq-bits {approx['bits']}", f"--nprobe {approx['nprobe']}", f"--rerank {approx['rerank']}",
            f"--seed {approx['seed']}"]
    args += [f"--{key.replace('_', '-')} {approx[key]}" for key in ("nlist", "train_size") if approx[key]]
    return " ".join(args)


# --- Neural Optimizer Search (rules/automl.smk) ---------------------------------------------------------------

AUTOML = config["automl"]
NOS_DIR = "results/automl/nos"


def nos_histories(wildcards=None):
    return [f"{NOS_DIR}/history/{a}-s{s}.tsv" for a in AUTOML["algorithms"] for s in AUTOML["seeds"]]


# --- Architecture search (rules/automl.smk) -------------------------------------------------------------------

NAS = AUTOML["nas"]
NAS_DIR = "results/automl/nas"


def nas_searches(wildcards=None):
    """The live searches' model tables: one per (algorithm, init) of config and seed."""
    return [f"{NAS_DIR}/live/{s['algorithm']}-{s.get('init', 'random')}-s{seed}.tsv" for s in NAS["searches"]
            for seed in NAS["seeds"]]
