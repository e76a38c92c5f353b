"""The Snakemake workflow: dry run, lint, config errors, and a tiny end-to-end run (reads to benchmarked calls).

Every run uses a temporary working directory (`-s ROOT/Snakefile`, cwd=tmp), so the checkout stays clean.
Runs that call variants get a tiny random model directory through `model:` (the shipped model may be absent).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "config" / "config.yaml"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.workflow


def snakemake(tmp_path: Path, *args, configfile: Path = DEFAULT_CONFIG, timeout=120):
    """Run snakemake on this repo's Snakefile in tmp_path; the venv's bin goes first on PATH for `deepflows`."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile", str(configfile), *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def job_counts(stdout: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> count."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stdout, re.M) if m[1] != "total"}


def write_config(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "test-config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny, randomly initialised small_cnn for the examples' full pileup shape."""
    from deepflows.genomics.examples.pileup_image import CHANNELS
    from deepflows.nn.model_dir import save_model
    from deepflows.nn.models import build_model

    options = {"widths": [4, 8], "hidden": 8, "centre": 4}
    directory = tmp_path_factory.mktemp("model") / "tiny"
    model = build_model("small_cnn", options, len(CHANNELS), 0)
    save_model(directory, model, {"name": "tiny-random", "architecture": "small_cnn", "options": options,
                                  "input_shape": [100, 221, len(CHANNELS)], "channels": list(CHANNELS)})  # fmt: skip
    return directory


def test_dry_run_default_config(tmp_path, model_dir):
    run = snakemake(tmp_path, "-n", "-p", "--config", f"model={model_dir}")
    assert run.returncode == 0, run.stderr
    assert job_counts(run.stdout) == {
        "make_reference": 1, "simulate": 1, "make_examples": 4, "check_shards": 1, "call_variants": 1,
        "postprocess": 1, "benchmark": 1, "gq_calibration": 1, "run_times": 1, "provenance": 1, "all": 1,
    }  # fmt: skip
    assert "results/demo/examples/calling/manifest.json" in run.stdout
    assert "--shard 3/4 --out results/demo/examples/calling/examples-00003-of-00004.zarr" in run.stdout
    # indexes that rules make are in the DAG: simulate's .bai (temporary) and make_reference's .fai
    inputs = re.findall(r"^rule make_examples:\n\s+input: (.*)", run.stdout, re.MULTILINE)
    assert len(inputs) == 4 and all(line.split(", ") == ["results/demo/reference/demo.fa",
        "results/demo/reference/demo.fa.fai", "results/demo/reads/simulated.bam",
        "results/demo/reads/simulated.bam.bai"] for line in inputs)  # fmt: skip
    call = re.search(r"deepflows call-variants .*", run.stdout)[0]
    assert call.count("examples/calling/examples-") == 4
    assert f"--model {model_dir} --out results/demo/calls/probs.zarr --batch-size 512" in call
    assert "--out results/demo/calls/calls.vcf.gz --sample demo" in run.stdout
    bench = re.search(r"deepflows benchmark .*", run.stdout)[0]
    truth = "results/demo/reads/simulated.truth.vcf.gz --confident results/demo/reads/simulated.confident.bed"
    assert f"--truth {truth}" in bench
    assert "--query results/demo/calls/calls.vcf.gz" in bench and "--out results/demo/benchmark " in bench
    assert not (tmp_path / "results").exists()
    assert "gvcf" not in run.stdout  # the gVCF is off by default


def test_dry_run_gvcf(tmp_path, model_dir):
    """gvcf.enabled: every make_examples shard also writes its blocks (temporary), postprocess reads them all and
    writes the gVCF, a default target."""
    cfg = write_config(tmp_path, {"model": str(model_dir), "make_examples": {"shards": 2},
                                  "gvcf": {"enabled": True, "gq_binsize": 3}})  # fmt: skip
    run = snakemake(tmp_path, "-n", "-p", configfile=cfg)
    assert run.returncode == 0, run.stderr
    assert job_counts(run.stdout)["make_examples"] == 2 and job_counts(run.stdout)["postprocess"] == 1
    blocks = [f"results/demo/examples/calling/gvcf-blocks-0000{i}-of-00002.tsv.gz" for i in range(2)]
    for i, path in enumerate(blocks):
        assert f"--shard {i}/2 --out results/demo/examples/calling/examples-0000{i}-of-00002.zarr" in run.stdout
        assert f"--sample demo --gvcf {path} --gvcf-gq-binsize 3 2> " in run.stdout
        assert f"Would remove temporary output {path}" in run.stdout
    post = re.search(r"deepflows postprocess .*", run.stdout)[0]
    assert f"--gvcf-blocks {' '.join(blocks)} --gvcf-out results/demo/calls/calls.g.vcf.gz 2> " in post
    all_inputs = re.search(r"^rule all:\n\s+input: (.*)", run.stdout, re.MULTILINE)[1].split(", ")
    assert {"results/demo/calls/calls.g.vcf.gz", "results/demo/calls/calls.g.vcf.gz.tbi"} <= set(all_inputs)


def one_error(run) -> str:
    """The run failed with exactly one `error:` line, no traceback and no missing-input report: that line."""
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.stderr
    assert "Traceback" not in run.stderr and "MissingInputException" not in run.stderr, run.stderr
    return errors[0]


def test_missing_model_fails_with_one_line(tmp_path):
    run = snakemake(tmp_path, "-n", "--config", "model=no/such/model")
    assert one_error(run) == "error: model: no/such/model: not found"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.json").write_text("[]")  # checked before the run, as call-variants would
    run = snakemake(tmp_path, "-n", "--config", "model=m")
    assert one_error(run) == "error: model: m/model.json: unreadable model description (a JSON list, not an object)"


def test_dry_run_follows_config(tmp_path):
    cfg = write_config(tmp_path, {"sample": "s7", "make_examples": {"shards": 7, "training": True}})
    run = snakemake(tmp_path, "-n", "-p", configfile=cfg)
    assert run.returncode == 0, run.stderr
    assert job_counts(run.stdout)["make_examples"] == 7
    # simulated reads label their examples with the simulated truth
    assert "--truth results/s7/reads/simulated.truth.vcf.gz --confident results/s7/reads/simulated.confident.bed" in (
        run.stdout
    )
    assert "results/s7/examples/training/examples-00006-of-00007.zarr" in run.stdout
    # labelled examples are the end of the run: no calls, so no model needed
    assert "call_variants" not in job_counts(run.stdout)


REAL_READS = {"reference": {"fasta": "ref.fa"}, "reads": {"path": "r.bam"}, "make_examples": {"regions": ["c:1-100"]}}


def test_dry_run_real_reads_skip_simulation(tmp_path, model_dir):
    for name in ("ref.fa", "r.bam"):  # no .fai, no .bai: make-examples builds them beside the files
        (tmp_path / name).touch()
    cfg = write_config(tmp_path, {**REAL_READS, "model": str(model_dir)})
    run = snakemake(tmp_path, "-n", "-p", configfile=cfg)
    assert run.returncode == 0, run.stderr
    counts = job_counts(run.stdout)
    assert "simulate" not in counts and "make_reference" not in counts
    assert "--reads r.bam --ref ref.fa --preset wgs --regions c:1-100 --shard 0/4" in run.stdout
    assert counts["postprocess"] == 1 and "benchmark" not in counts  # no truth configured: calls only
    inputs = re.findall(r"^rule make_examples:\n\s+input: (.*)", run.stdout, re.MULTILINE)
    assert len(inputs) == 4 and all(line.split(", ") == ["ref.fa", "r.bam"] for line in inputs)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"reads": {"path": "/data/x.bam"}}, "reads.path: /data/x.bam: not found"),
        ({"reference": {"fasta": "no.fa"}}, "reference.fasta: no.fa: not found"),
        ({"truth": {"vcf": "no.vcf.gz", "confident_bed": "t.bed"}}, "truth.vcf: no.vcf.gz: not found"),
        ({"make_examples": {"training": True, "regions": []}, "truth": {"vcf": "t.vcf.gz", "confident_bed": "t.bed"}},
         "truth.vcf: t.vcf.gz: no index (t.vcf.gz.tbi) for make-examples' labels; run `tabix -p vcf t.vcf.gz`"),
    ],
)
def test_missing_input_fails_before_any_job_with_one_line(tmp_path, model_dir, change, expected):
    for name in ("ref.fa", "r.bam", "t.vcf.gz", "t.bed"):
        (tmp_path / name).touch()
    cfg = write_config(tmp_path, {**REAL_READS, "model": str(model_dir), **change})
    assert one_error(snakemake(tmp_path, "-n", configfile=cfg)) == f"error: {expected}"


def test_dry_run_benchmark_of_real_reads(tmp_path, model_dir):
    for name in ("ref.fa", "ref.fa.fai", "r.bam", "r.bam.bai", "t.vcf.gz", "t.vcf.gz.tbi", "t.bed", "lc.bed"):
        (tmp_path / name).touch()
    truth = {"truth": {"vcf": "t.vcf.gz", "confident_bed": "t.bed"}, "model": str(model_dir)}
    cfg = write_config(tmp_path, {**REAL_READS, **truth, "benchmark": {"stratify": {"lowcomplexity": "lc.bed"}}})
    run = snakemake(tmp_path, "-n", "-p", configfile=cfg)
    assert run.returncode == 0, run.stderr
    bench = re.search(r"deepflows benchmark .*", run.stdout)[0]
    assert "--truth t.vcf.gz --confident t.bed --query results/demo/calls/calls.vcf.gz --ref ref.fa" in bench
    assert "--regions c:1-100 --stratify lowcomplexity=lc.bed --out results/demo/benchmark " in bench
    cfg = write_config(tmp_path, {**REAL_READS, **truth, "benchmark": {"enabled": False}})
    run = snakemake(tmp_path, "-n", configfile=cfg)
    assert run.returncode == 0, run.stderr
    counts = job_counts(run.stdout)
    assert "benchmark" not in counts and "gq_calibration" not in counts and counts["postprocess"] == 1


def test_lint_is_clean(tmp_path):
    run = snakemake(tmp_path, "--lint")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Congratulations, your workflow is in a good condition!" in run.stdout + run.stderr


@pytest.mark.parametrize(
    "data, problem",
    [
        ({"make_examples": {"shards": "four"}}, "make_examples.shards: 'four' is not of type 'integer'"),
        ({"make_exampels": {"shards": 2}}, "make_exampels: unknown key (known keys here: "),
        ({"benchmark": {"stratify": {"lc": "lc.txt"}}}, "benchmark.stratify.lc: 'lc.txt' must be a .bed or .bed.gz"),
    ],
)
def test_bad_config_fails_with_one_line(tmp_path, data, problem):
    cfg = write_config(tmp_path, data)
    run = snakemake(tmp_path, "-n", configfile=cfg)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {cfg}: {problem}"), run.stderr
    assert "Traceback" not in run.stderr


def test_profiles_name_existing_rules():
    """Profiles name only rules that exist, and the Slurm profile sizes every rule that runs a job."""
    text = "".join(p.read_text() for p in sorted((ROOT / "rules").glob("*.smk")))
    bodies = dict(re.findall(r"^rule (\w+):(.*?)(?=^rule |\Z)", text, re.M | re.S))
    jobs = {name for name, body in bodies.items() if re.search(r"^    (shell|run|script):", body, re.M)}
    for profile in (ROOT / "profiles").glob("*/config.v9+.yaml"):
        settings = yaml.safe_load(profile.read_text())
        for key in ("set-threads", "set-resources"):
            unknown = set(settings.get(key, {})) - set(bodies)
            assert not unknown, f"{profile}: {key} names unknown rules {unknown}"
            if profile.parent.name == "slurm":
                assert jobs <= set(settings[key]), f"{profile}: {key} misses {jobs - set(settings[key])}"


def test_tiny_end_to_end(tmp_path, model_dir):
    cfg = write_config(
        tmp_path,
        {
            "sample": "tiny",
            "reference": {"demo": {"length": 40_000}},
            "reads": {"simulate": {"depth": 10}},
            "make_examples": {"shards": 2},
            "model": str(model_dir),
        },
    )
    run = snakemake(tmp_path, "--cores", "2", configfile=cfg, timeout=150)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    manifest = tmp_path / "results/tiny/examples/calling/manifest.json"
    assert isinstance(json.loads(manifest.read_text()), dict)
    for i in range(2):
        assert (tmp_path / f"results/tiny/examples/calling/examples-0000{i}-of-00002.zarr/zarr.json").is_file()
        assert (tmp_path / f"benchmarks/tiny/make_examples/calling/0000{i}-of-00002.tsv").is_file()
    assert (tmp_path / "results/tiny/reads/simulated.truth.vcf.gz").is_file()
    assert not (tmp_path / "results/tiny/reads/simulated.bam").exists()  # temp(): removed once used
    assert not (tmp_path / "results/tiny/calls/probs.zarr").exists()  # temp(): removed once postprocessed

    import pysam

    vcf = tmp_path / "results/tiny/calls/calls.vcf.gz"
    header = vcf.read_bytes()[:18]
    assert header[:4] == b"\x1f\x8b\x08\x04" and header[12:14] == b"BC"  # BGZF, not plain gzip
    assert (tmp_path / "results/tiny/calls/calls.vcf.gz.tbi").is_file()
    with pysam.VariantFile(str(vcf)) as calls:
        assert list(calls.header.samples) == ["tiny"]
        assert sum(1 for _ in calls.fetch("demo")) > 0  # fetch needs the tabix index

    summary = (tmp_path / "results/tiny/benchmark/summary.csv").read_text().splitlines()
    assert summary[0].startswith("Type,Filter,TRUTH.TOTAL,TRUTH.TP,TRUTH.FN,QUERY.TOTAL,QUERY.FP")
    assert {tuple(line.split(",")[:2]) for line in summary[1:]} >= {("SNP", "PASS"), ("INDEL", "PASS")}
    for name in ("summary.json", "errors.tsv", "gq_calibration.png"):
        assert (tmp_path / "results/tiny/benchmark" / name).is_file()
    calibration = (tmp_path / "results/tiny/benchmark/gq_calibration.tsv").read_text().splitlines()
    assert calibration[0].startswith("gq\tcalls\terrors") and len(calibration) > 1
    for stage in ("call_variants", "postprocess", "benchmark"):
        assert (tmp_path / f"benchmarks/tiny/{stage}.tsv").is_file() and (tmp_path / f"logs/tiny/{stage}.log").is_file()
    times = [line.split("\t") for line in (tmp_path / "results/tiny/run_times.tsv").read_text().splitlines()]
    assert times[0][:3] == ["stage", "jobs", "wall_s_sum"]
    assert [row[:2] for row in times[1:]] == [["simulate", "1"], ["make_examples", "2"], ["call_variants", "1"],
                                              ["postprocess", "1"], ["benchmark", "1"]]  # fmt: skip
    # Provenance: the VCF header's record of what made the calls, config hash included, as a report table.
    provenance = dict(line.split("\t", 1) for line in (tmp_path / "results/tiny/provenance.tsv").read_text().splitlines())
    assert provenance.pop("key") == "value"
    with pysam.VariantFile(str(vcf)) as calls:
        header = {r.key: r.value for r in calls.header.records if r.key.startswith("deepflows_")}
    assert {k: provenance[k] for k in header} == header
    assert re.fullmatch(r"[0-9a-f]{64}", provenance["deepflows_config_sha256"])
    assert re.fullmatch(r"[0-9a-f]{64}", provenance["deepflows_model_sha256"])
    assert "jax=" in provenance["deepflows_software"] and provenance["snakemake"]
    # The report (offline): the benchmark summary, the GQ calibration plot, the run times, the provenance and
    # the manifest.
    report = snakemake(tmp_path, "--report", "report.html", configfile=cfg, timeout=120)
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "report.html").read_text(errors="replace")
    for name in ("summary.csv", "gq_calibration.png", "run_times.tsv", "provenance.tsv", "manifest.json"):
        assert name in html, name
    done = next(line for line in (run.stdout + run.stderr).splitlines() if line.startswith("deepflows: done."))
    assert "Calls for sample 'tiny': results/tiny/calls/calls.vcf.gz" in done
    assert re.search(r"benchmark: results/tiny/benchmark/summary.csv \(PASS F1: SNP \S+, INDEL \S+\)", done), done

    # `deepflows benchmark` never overwrites a benchmark; a new --out directory appears whole, or not at all.
    truth = "results/tiny/reads/simulated"
    args = [str(BIN / "deepflows"), "benchmark", "--truth", f"{truth}.truth.vcf.gz", "--confident",
            f"{truth}.confident.bed", "--query", "results/tiny/calls/calls.vcf.gz", "--ref",
            "results/tiny/reference/demo.fa", "--out"]  # fmt: skip
    before = (tmp_path / "results/tiny/benchmark/summary.csv").read_bytes()
    again = subprocess.run([*args, "results/tiny/benchmark"], cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        "deepflows benchmark: error: results/tiny/benchmark: already exists and holds a benchmark (summary.csv);"
        " remove it or choose another --out"
    ]
    assert (tmp_path / "results/tiny/benchmark/summary.csv").read_bytes() == before
    fresh = subprocess.run([*args, "bench2"], cwd=tmp_path, capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr
    assert sorted(p.name for p in (tmp_path / "bench2").iterdir()) == ["errors.tsv", "summary.csv", "summary.json"]
    assert (tmp_path / "bench2/summary.csv").read_bytes() == before and not list(tmp_path.glob("bench2.tmp-*"))
    (tmp_path / "file").write_text("x")
    refused = subprocess.run([*args, "file"], cwd=tmp_path, capture_output=True, text=True)
    assert refused.returncode == 2 and "file: already exists; remove it or choose another --out" in refused.stderr
