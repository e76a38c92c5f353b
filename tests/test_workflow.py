"""The Snakemake workflow: dry run, lint, config errors, and a tiny end-to-end run.

Every run uses a temporary working directory (`-s ROOT/Snakefile`, cwd=tmp), so the checkout stays clean.
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


def test_dry_run_default_config(tmp_path):
    run = snakemake(tmp_path, "-n", "-p")
    assert run.returncode == 0, run.stderr
    assert job_counts(run.stdout) == {
        "make_reference": 1, "simulate": 1, "make_examples": 4, "check_shards": 1, "all": 1,
    }  # fmt: skip
    assert "results/demo/examples/calling/manifest.json" in run.stdout
    assert "--shard 3/4 --out results/demo/examples/calling/examples-00003-of-00004.zarr" in run.stdout
    assert not (tmp_path / "results").exists()


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


def test_dry_run_real_reads_skip_simulation(tmp_path):
    for name in ("ref.fa", "ref.fa.fai", "r.bam", "r.bam.bai"):
        (tmp_path / name).touch()
    cfg = write_config(
        tmp_path,
        {"reference": {"fasta": "ref.fa"}, "reads": {"path": "r.bam"}, "make_examples": {"regions": ["c:1-100"]}},
    )
    run = snakemake(tmp_path, "-n", "-p", configfile=cfg)
    assert run.returncode == 0, run.stderr
    assert "simulate" not in job_counts(run.stdout) and "make_reference" not in job_counts(run.stdout)
    assert "--reads r.bam --ref ref.fa --regions c:1-100 --shard 0/4" in run.stdout


def test_lint_is_clean(tmp_path):
    run = snakemake(tmp_path, "--lint")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Congratulations, your workflow is in a good condition!" in run.stdout + run.stderr


@pytest.mark.parametrize(
    "data, problem",
    [
        ({"make_examples": {"shards": "four"}}, "make_examples.shards: 'four' is not of type 'integer'"),
        ({"make_exampels": {"shards": 2}}, "make_exampels: unknown key (known keys here: "),
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
    rules = set(re.findall(r"^rule (\w+):", "".join(p.read_text() for p in (ROOT / "rules").glob("*.smk")), re.M))
    for profile in (ROOT / "profiles").glob("*/config.v9+.yaml"):
        settings = yaml.safe_load(profile.read_text())
        for key in ("set-threads", "set-resources"):
            unknown = set(settings.get(key, {})) - rules
            assert not unknown, f"{profile}: {key} names unknown rules {unknown}"


def test_tiny_end_to_end(tmp_path):
    cfg = write_config(
        tmp_path,
        {
            "sample": "tiny",
            "reference": {"demo": {"length": 40_000}},
            "reads": {"simulate": {"depth": 10}},
            "make_examples": {"shards": 2},
        },
    )
    run = snakemake(tmp_path, "--cores", "2", configfile=cfg, timeout=110)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    manifest = tmp_path / "results/tiny/examples/calling/manifest.json"
    assert isinstance(json.loads(manifest.read_text()), dict)
    for i in range(2):
        assert (tmp_path / f"results/tiny/examples/calling/examples-0000{i}-of-00002.zarr/zarr.json").is_file()
        assert (tmp_path / f"benchmarks/tiny/make_examples/calling/0000{i}-of-00002.tsv").is_file()
    assert (tmp_path / "results/tiny/reads/simulated.truth.vcf.gz").is_file()
    assert not (tmp_path / "results/tiny/reads/simulated.bam").exists()  # temp(): removed once used
    assert "Results for sample 'tiny' are in results/tiny/" in run.stdout + run.stderr
