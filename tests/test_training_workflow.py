"""The training-data rule family (rules/variants_train.smk): chunk plan, scheduling, and a tiny end-to-end run.

Every run uses a temporary working directory (`-s ROOT/Snakefile`, cwd=tmp), so the checkout stays clean.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from deepflows.config import validate_config
from deepflows.errors import UserError
from deepflows.genomics.io.regions import Interval
from deepflows.genomics.simulate.training_plan import plan_training, split_evenly

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NAMED_RUN = ROOT / "config" / "train-hg002-grch38.yaml"

# A 200 kb generated genome, random variants; one evaluation region in the middle, one tuning region.
TINY = {
    "sample": "tt",
    "reference": {"demo": {"length": 200_000, "contig": "demo", "seed": 1}},
    "training_data": {
        "variants": "random",
        "variant_rate": 0.002,
        "chunk_size": 50_000,
        "eval_regions": ["demo:90001-110000"],
        "eval_margin": 1000,
        "tune_regions": ["demo:20001-40000"],
        "tune_margin": 500,
        "simulate": {"depth": 10},
        "eval_sets": {
            "standard": {"depth": 10, "seed": 21},
            "hard": {"depth": 8, "read_length": 100, "error_rate_scale": 2.0, "seed": 22},
        },
        "eval_shards": 2,
        "shuffle": {"seed": 7, "bucket_size": 64, "chunk_size": 16},
    },
}


def snakemake(tmp_path: Path, *args, config: dict | Path = TINY, timeout=120):
    if isinstance(config, dict):
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        config = path
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile", str(config), *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def job_counts(stdout: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stdout, re.MULTILINE) if m[1] != "total"}


def simulated_regions(stdout: str) -> dict[str, list[str]]:
    """--region arguments of every `deepflows simulate` in a dry run, by output prefix."""
    found = {}
    for m in re.finditer(r"deepflows simulate .*?--region ((?:\S+:\d+-\d+ ?)+).*?--out-prefix (\S+)", stdout):
        found[m[2]] = m[1].split()
    return found


def _interval(text: str) -> Interval:
    contig, span = text.rsplit(":", 1)
    start, end = span.split("-")
    return Interval(contig, int(start) - 1, int(end))


# ----------------------------------------------------------------------------- the plan, without Snakemake


def test_plan_cuts_out_evaluation_regions_with_margin_and_balances_chunks():
    td = validate_config(TINY, "tiny")["training_data"]
    plan = plan_training(td, {"demo": 200_000})
    assert [str(c) for c in plan.chunks] == [
        "demo:1-44500", "demo:44501-89000", "demo:111001-155500", "demo:155501-200000",
    ]  # fmt: skip
    assert [str(t) for t in plan.tune_regions] == ["demo:20001-40000"]
    assert split_evenly(Interval("c", 0, 10), 3) == [Interval("c", 0, 2), Interval("c", 2, 5), Interval("c", 5, 7),
                                                     Interval("c", 7, 10)]  # fmt: skip


@pytest.mark.parametrize(
    "change, message",
    [
        ({"tune_regions": ["demo:89001-95000"]}, "training_data.tune_regions: demo:89001-95000 is not inside"),
        ({"regions": ["chrX:1-100"]}, "training_data.regions: region 'chrX:1-100': contig 'chrX' is not in"),
        ({"eval_regions": ["demo:1-200000"]}, "training_data: nothing left to train on"),
    ],
)
def test_plan_refuses_bad_layouts(change, message):
    td = validate_config({"training_data": {**TINY["training_data"], **change}}, "x")["training_data"]
    with pytest.raises(UserError, match=re.escape(message)):
        plan_training(td, {"demo": 200_000})


# ----------------------------------------------------------------------------- scheduling (dry runs)

@pytest.mark.workflow
def test_dry_run_schedules_chunks_and_eval_sets(tmp_path):
    run = snakemake(tmp_path, "-n", "-p", "training_data")
    assert run.returncode == 0, run.stderr
    assert job_counts(run.stdout) == {
        "make_reference": 1, "train_simulate": 4, "train_make_examples": 4, "train_shuffle": 1,
        "eval_simulate": 2, "eval_make_examples": 4, "eval_check_shards": 2, "training_data": 1,
    }  # fmt: skip
    regions = simulated_regions(run.stdout)
    train = {p: r for p, r in regions.items() if "/train/" in p}
    assert sorted(r[0] for r in train.values()) == sorted(
        ["demo:1-44500", "demo:44501-89000", "demo:111001-155500", "demo:155501-200000"]
    )
    guarded = Interval("demo", 89_000, 111_000)  # the evaluation region and 1 kb either side
    for (region,) in train.values():
        iv = _interval(region)
        assert iv.end <= guarded.start or iv.start >= guarded.end, region
    assert regions["results/tt/eval/hard/reads"] == ["demo:90001-110000"]
    hard = re.search(r"deepflows simulate .*--out-prefix results/tt/eval/hard/reads", run.stdout)[0]
    assert "--depth 8 --read-length 100 --error-rate-scale 2.0" in hard and "--seed 22" in hard
    assert "--random-variants --variant-rate 0.002" in hard
    assert "--seed 11 " in run.stdout and "--seed 14 " in run.stdout  # chunk i simulates with seed 11 + i
    shuffle = re.search(r"deepflows shuffle-examples .*", run.stdout)[0]
    assert shuffle.count("/examples.zarr") == 4
    assert "--tune-regions demo:20001-40000 --tune-margin 500 --seed 7 --bucket-size 64 --chunk-size 16" in shuffle
    assert "--truth results/tt/train/chunks/00002/reads.truth.vcf.gz" in run.stdout  # labels from the chunk's truth
    assert "--shard 1/2 --out results/tt/eval/standard/examples/calling/examples-00001-of-00002.zarr" in run.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.workflow
def test_replicates_simulate_every_region_again_with_new_seeds(tmp_path):
    config = {**TINY, "training_data": {**TINY["training_data"], "replicates": 2,
                                        "simulate_cycle": [{"depth": 10}, {"depth": 12, "hotspot_beta": [3, 12]},
                                                           {"depth": 14}]}}  # fmt: skip
    run = snakemake(tmp_path, "-n", "-p", "training_data", config=config)
    assert run.returncode == 0, run.stderr
    assert job_counts(run.stdout)["train_simulate"] == 8
    commands = {m[2]: m[1] for m in re.finditer(r"(deepflows simulate .*?--out-prefix (\S+))", run.stdout)}
    for i in range(4):  # chunk 4 + i: region i again, seed 11 + 4 + i, the next cycle entry
        first, again = commands[f"results/tt/train/chunks/0000{i}/reads"], commands[f"results/tt/train/chunks/0000{i + 4}/reads"]
        region = re.search(r"--region (\S+)", first)[1]
        assert re.search(r"--region (\S+)", again)[1] == region
        assert f"--seed {11 + i} " in first and f"--seed {15 + i} " in again
        assert f"--depth {10 + 2 * (i % 3)} " in first and f"--depth {10 + 2 * ((i + 4) % 3)} " in again
        for chunk, command in ((i, first), (i + 4, again)):  # the artifact setting of its entry only
            assert ("--hotspot-beta 3 12 " in command) == (chunk % 3 == 1), command
    assert re.search(r"deepflows shuffle-examples .*", run.stdout)[0].count("/examples.zarr") == 8


@pytest.mark.workflow
def test_enabled_makes_training_data_the_default_target(tmp_path):
    run = snakemake(tmp_path, "-n", config={**TINY, "training_data": {**TINY["training_data"], "enabled": True}})
    assert run.returncode == 0, run.stderr
    counts = job_counts(run.stdout)
    assert counts["train_shuffle"] == 1 and counts["all"] == 1 and "make_examples" not in counts


@pytest.mark.workflow
def test_bad_training_layout_fails_with_one_line(tmp_path):
    bad = {**TINY, "training_data": {**TINY["training_data"], "enabled": True, "tune_regions": ["demo:95001-96000"]}}
    run = snakemake(tmp_path, "-n", config=bad)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    expected = (
        "error: training_data.tune_regions: demo:95001-96000 is not inside the training span (minus "
        "the evaluation regions and 1000 bp around them)"
    )
    assert errors == [expected], run.stderr
    assert "Traceback" not in run.stderr


def test_calibration_on_evaluation_data_is_refused(tmp_path):
    bad = {**TINY, "train": {"calibration_sets": ["standard"]}}  # an eval set over the evaluation regions
    run = snakemake(tmp_path, "-n", "trained_model", config=bad)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    expected = ("error: config key train.calibration_sets: 'standard' is not one of training_data.eval_sets "
                "with `regions: tune` (a model is never calibrated on evaluation data)")  # fmt: skip
    assert errors == [expected], run.stderr
    assert "Traceback" not in run.stderr


NAMED_WES_RUN = ROOT / "config" / "train-hg002-grch38-wes.yaml"
NAMED_MIXED_RUN = ROOT / "config" / "train-hg002-grch38-mixed.yaml"
NAMED_PCR_RUN = ROOT / "config" / "train-hg002-grch38-pcr.yaml"


@pytest.mark.workflow
@pytest.mark.realdata
@pytest.mark.parametrize("named", [NAMED_RUN, NAMED_WES_RUN, NAMED_MIXED_RUN, NAMED_PCR_RUN],
                         ids=["wgs", "wes", "mixed", "pcr"])
def test_named_run_never_simulates_training_reads_in_evaluation_regions(tmp_path, shared_data, named):
    """config/train-hg002-grch38(-wes).yaml, dry run in an empty directory (its data paths made absolute)."""
    text = named.read_text().replace("../shared/data", str(shared_data))
    config = tmp_path / named.name
    config.write_text(text)
    included = [tmp_path / pattern.replace("*", "00000")  # another run's shard, made by its own config first
                for pattern in yaml.safe_load(text)["training_data"].get("also_shuffle", [])]  # fmt: skip
    for shard in included:
        shard.mkdir(parents=True)
        (shard / "zarr.json").write_text("{}")
    run = snakemake(tmp_path, "-n", "-p", config=config)  # rule all: training_data.enabled is true
    assert run.returncode == 0, run.stderr
    [shuffle] = [line for line in run.stdout.splitlines() if "deepflows shuffle-examples " in line]
    assert all(f" {shard.relative_to(tmp_path)} " in shuffle for shard in included)  # shuffled in, not remade:
    counts = job_counts(run.stdout)
    named_config = yaml.safe_load(text)
    sample, training = named_config["sample"], named_config["training_data"]
    eval_sets, replicates = training["eval_sets"], training["replicates"]
    assert counts["train_simulate"] == counts["train_make_examples"] == 10 * replicates
    assert counts["eval_simulate"] == len(eval_sets)
    evaluation = [Interval("chr20", 4_900_000, 5_200_000), Interval("chr20", 8_900_000, 9_200_000)]
    regions = simulated_regions(run.stdout)
    train = sorted({_interval(r[0]) for p, r in regions.items() if "/train/" in p})
    assert len(train) == 10 and sum(iv.length for iv in train) == 10_000_000 - 2 * 302_000
    for iv in train:
        for ev in evaluation:
            assert iv.end <= ev.start - 1000 or iv.start >= ev.end + 1000, (iv, ev)
    tune_regions = ["chr20:2000001-2250000", "chr20:7200001-7450000"]
    for name, settings in eval_sets.items():  # the calibration sets: the tuning regions, never the evaluation ones
        expected = tune_regions if settings.get("regions") == "tune" else [str(e) for e in evaluation]
        assert regions[f"results/{sample}/eval/{name}/reads"] == expected, name
    # exome-like chunks and sets: simulated from their own capture targets and called over them
    cycle = training["simulate_cycle"]
    captured = [i for i in range(10 * replicates) if "capture" in cycle[i % len(cycle)]]
    assert counts.get("train_targets", 0) == len(captured)
    for i in captured:
        targets = f"results/{sample}/train/chunks/{i:05d}/targets.bed"
        assert f"--targets {targets}" in run.stdout and f"--preset wes --targets {targets}" in run.stdout
    captured_sets = [name for name, settings in eval_sets.items() if "capture" in settings]
    assert counts.get("eval_targets", 0) == len(captured_sets)
    for name in captured_sets:
        assert f"--preset wes --targets results/{sample}/eval/{name}/targets.bed" in run.stdout
    # the simulator, its profile, the quality binning and the aligner of each chunk and set are its entry's
    bwa_index = f"--bwa-index results/{sample}/reference/bwa/reference"
    entries = [(f"train/chunks/{i:05d}", cycle[i % len(cycle)]) for i in range(10 * replicates)]
    for folder, settings in entries + [(f"eval/{name}", entry) for name, entry in eval_sets.items()]:
        command = simulate_command(run.stdout, f"results/{sample}/{folder}/reads")
        simulator = settings.get("simulator", "deepflows")
        assert (f"--simulator {simulator}" in command) == (simulator != "deepflows"), folder
        assert (f"--art-profile {settings.get('art_profile')}" in command) == ("art_profile" in settings), folder
        assert (f"--quality-bins {settings.get('quality_bins')}" in command) == ("quality_bins" in settings), folder
        assert (bwa_index in command) == (settings.get("aligner") == "bwa"), folder
    uses_bwa = any(settings.get("aligner") == "bwa" for _, settings in entries) or any(
        settings.get("aligner") == "bwa" for settings in eval_sets.values())
    assert counts.get("bwa_index", 0) == int(uses_bwa)
    assert "--truth " + str(shared_data / "genomics/HG002_GRCh38_1_22_v4.2.1_benchmark.chr20.vcf.gz") in run.stdout
    assert "--tune-regions chr20:2000001-2250000 chr20:7200001-7450000 --tune-margin 1000" in run.stdout


def simulate_command(stdout: str, prefix: str) -> str:
    """The one `deepflows simulate` command of a dry run (-p) that writes PREFIX."""
    [command] = [line for line in stdout.splitlines() if "deepflows simulate" in line and f"--out-prefix {prefix} " in line]
    return command


# ----------------------------------------------------------------------------- end to end


@pytest.mark.workflow
def test_tiny_training_data_end_to_end(tmp_path):
    run = snakemake(tmp_path, "--cores", "2", "training_data", timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    from deepflows.store.shuffle import open_training_store

    store = tmp_path / "results/tt/train/train.zarr"
    inputs, meta, labels = open_training_store(store, "train")
    assert inputs.shape[0] == labels.shape[0] == len(meta) > 100 and inputs.shape[1:] == (100, 221, 8)
    assert set(np.unique(labels.compute())) <= {0, 1, 2} and (labels == 1).sum().compute() > 0
    _, tune_meta, _ = open_training_store(store, "tune")
    assert len(tune_meta) > 0 and tune_meta["start"].between(20_000, 39_999).all()
    assert not meta["start"].between(19_500, 40_499).any()  # tuning region and its 500 bp margin
    assert not meta["start"].between(89_000, 110_999).any()  # evaluation region and its margin
    summary = json.loads((tmp_path / "results/tt/train/train.json").read_text())
    assert summary["splits"]["train"]["examples"] == len(meta)
    assert sum(summary["splits"]["tune"]["classes"].values()) == len(tune_meta)
    for chunk in range(4):
        folder = tmp_path / f"results/tt/train/chunks/{chunk:05d}"
        assert not (folder / "reads.bam").exists()  # temp(): removed once make_examples used it
        assert (folder / "reads.truth.vcf.gz").is_file() and (folder / "examples.zarr/zarr.json").is_file()
        assert (tmp_path / f"benchmarks/tt/train/simulate/{chunk:05d}.tsv").is_file()
        assert (tmp_path / f"benchmarks/tt/train/make_examples/{chunk:05d}.tsv").is_file()
    assert (tmp_path / "benchmarks/tt/train/shuffle.tsv").is_file()
    for name in ("standard", "hard"):
        folder = tmp_path / f"results/tt/eval/{name}"
        for suffix in (".bam", ".bam.bai", ".truth.vcf.gz", ".confident.bed"):
            assert (folder / f"reads{suffix}").is_file()  # kept for later calling and benchmarking
        manifest = json.loads((folder / "examples/calling/manifest.json").read_text())
        assert manifest["examples"] > 0 and manifest["shard_count"] == 2 and manifest["labels"] == {}

    # the report reads the run's benchmark TSVs, summaries and manifests
    out = tmp_path / "report.json"
    script = [sys.executable, str(ROOT / "bench/training_data_report.py"), "--sample", "tt", "--root", str(tmp_path)]
    report = subprocess.run([*script, "--json", str(out)], capture_output=True, text=True, timeout=60, check=False)
    assert report.returncode == 0, report.stderr
    data = json.loads(out.read_text())
    assert data["training"]["splits"]["train"]["examples"] == len(meta)
    assert data["training"]["stages"]["simulate"]["jobs"] == 4 and data["training"]["stages"]["shuffle"]["jobs"] == 1
    assert set(data["evaluation"]) == {"standard", "hard"}
    assert data["evaluation"]["hard"]["stages"]["make_examples"]["jobs"] == 2
    assert "| train |" in report.stdout and "| eval `hard` | simulate |" in report.stdout

    # target trained_model: deepflows train on that store, exported (protected) beside its checkpoints
    model_config = tmp_path / "tiny_cnn.yaml"
    model_config.write_text(yaml.safe_dump({
        "model": {"architecture": "small_cnn", "options": {"widths": [4, 8], "centre": 4, "hidden": 8}},
        "training": {"batch_size": 16, "steps": 6, "checkpoint_every": 3, "log_every": 3},
        "evaluation": {"every": 3},
    }))  # fmt: skip
    # ... and its call temperature fitted on a set simulated over the tuning region (target trained_model)
    eval_sets = {**TINY["training_data"]["eval_sets"], "tunecal": {"depth": 10, "seed": 23, "regions": "tune"}}
    config = {**TINY, "training_data": {**TINY["training_data"], "eval_sets": eval_sets},
              "train": {"config": str(model_config), "calibration_sets": ["tunecal"]}}  # fmt: skip
    run = snakemake(tmp_path, "--cores", "1", "trained_model", config=config, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    from deepflows.nn.model_dir import load_model

    workdir = tmp_path / "results/tt/train/run"
    _, meta = load_model(workdir / "model")
    _, calibrated = load_model(tmp_path / "results/tt/train/calibrated/model")  # same weights (sha256 checked)
    assert calibrated["sha256"] == meta["sha256"] and "call_temperature" not in meta["calibration"]
    assert calibrated["calibration"]["call_temperature"] > 0 and calibrated["calibration"]["call_sites"] > 0
    assert calibrated["calibration"]["call_fitted_on"] == ["results/tt/eval/tunecal/probs.zarr"]
    assert re.search(r"deepflows simulate .*--region demo:20001-40000 .*eval/tunecal/reads", run.stdout + run.stderr)
    assert meta["steps"] == 6 and meta["training_data"]["train_classes"] == summary["splits"]["train"]["classes"]
    assert meta["training_data"]["path"] == "results/tt/train/train.zarr"  # as given: no machine's absolute path
    assert meta["calibration"]["examples"] == len(tune_meta)
    assert (workdir / "metrics.jsonl").is_file() and list((workdir / "checkpoints").iterdir())
    assert (workdir / "model" / "weights.msgpack").stat().st_mode & 0o222 == 0  # protected(): read-only
    assert (tmp_path / "benchmarks/tt/train/train_model.tsv").is_file()
