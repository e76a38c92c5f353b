"""Configs naming paths that are not there: `validate-config` (15d) and the workflow's dry run (16a) must stop
with one line naming the config key and the file, before any job runs; a BAM without its .bai, which
make-examples builds, must not stop them (16b)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hostile_cases import ACCEPTED, MISSING, Case, check_case, params
from hostile_contract import FORBIDDEN_IN_STDERR, RUNS, Run

VALIDATE = "validate-config {config}"


def config_with(key: str, missing_name: str | None = None, reads_without_bai: bool = False):
    """A `make`: the valid config with `key` (dotted) pointing at `in/MISSING_NAME` (not there)."""

    def make(d, valid, work):
        config = yaml.safe_load(valid.config.read_text())
        if missing_name:
            section, _, leaf = key.rpartition(".")
            (config[section] if section else config)[leaf] = str(d / missing_name)
        if reads_without_bai:
            shutil.copy2(valid.bam, d / "reads.bam")  # no .bai beside it: make-examples builds one
            config["reads"]["path"] = str(d / "reads.bam")
        path = d / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return {"config": path}

    return make


def missing(case_id, key, name):
    return Case(case_id, "validate-config", VALIDATE, config_with(key, name), (), (key, name), (MISSING,))


CASES = [
    missing("15d-config-reads-path-missing", "reads.path", "gone.bam"),
    missing("15d-config-truth-vcf-missing", "truth.vcf", "gone.vcf.gz"),
    missing("15d-config-model-missing", "model", "absent-dir"),
    missing("own-config-confident-bed-missing", "truth.confident_bed", "gone.bed"),
    missing("own-config-reference-fasta-missing", "reference.fasta", "gone.fa"),
    Case("16b-config-bam-without-bai-accepted", "validate-config", VALIDATE, config_with("", reads_without_bai=True),
         expect=ACCEPTED, note="make-examples builds the .bai; the config check must not demand it"),
    Case("valid-config-accepted", "validate-config", VALIDATE, expect=ACCEPTED),
]


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_config(case, valid, work):
    check_case(case, valid, work)


# ----------------------------------------------------------------------------- the workflow's dry run (slow)
def snakefile_under_test() -> Path:
    """The Snakefile of the checkout whose deepflows package is under test (PYTHONPATH may point elsewhere)."""
    return Path(importlib.util.find_spec("deepflows").origin).resolve().parents[2] / "Snakefile"


def dry_run(work: Path, config: Path) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [sys.executable, "-m", "snakemake", "-s", str(snakefile_under_test()), "--configfile", str(config),
               "-n", "--cores", "1"]  # fmt: skip
    proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    RUNS.append(Run("snakemake", command[3:], work, proc.returncode, proc.stdout, proc.stderr))  # for the report
    return proc


@pytest.mark.workflow
def test_16a_dry_run_names_the_missing_bam_key(valid, work):
    """16a: `snakemake -n` with a missing BAM: one line naming `reads.path` and the file, not Snakemake's
    generic MissingInputException, and no traceback."""
    config = config_with("reads.path", "gone.bam")(work / "in", valid, work)["config"]
    run = dry_run(work, config)
    text = run.stdout + run.stderr
    lines = [x for x in text.splitlines() if "reads.path" in x and "gone.bam" in x]
    problems = []
    if run.returncode == 0:
        problems.append("exit status 0: the dry run planned a run on a missing BAM")
    if not lines:
        problems.append("no line names both `reads.path` and gone.bam")
    if "MissingInputException" in text:
        problems.append("Snakemake's generic MissingInputException instead of the config key")
    problems += [f"{w!r} in the output" for w in FORBIDDEN_IN_STDERR if w in text]
    assert not problems, "\n".join(problems) + "\n--- last lines:\n" + "\n".join(text.splitlines()[-12:])
    assert not (work / "results").exists()


@pytest.mark.workflow
def test_16b_dry_run_accepts_a_bam_without_bai(valid, work):
    """16b: make-examples builds a missing .bai, so the workflow must not demand one up front."""
    config = config_with("", reads_without_bai=True)(work / "in", valid, work)["config"]
    run = dry_run(work, config)
    text = run.stdout + run.stderr
    assert run.returncode == 0 and "MissingInputException" not in text, "\n".join(text.splitlines()[-12:])
    assert "make_examples" in run.stdout
