"""Reproducibility: the same inputs, config and seeds give the same calls and benchmark whatever the number of
make_examples shards.

Runs the tiny demo workflow of tests/test_workflow.py (its helpers and tiny model, imported, not copied) with 1
and with 3 shards in two working directories and compares the decompressed VCFs line by line, leaving out only
the header lines that record commands (they name the shard files), and summary.csv byte for byte.
"""

from __future__ import annotations

import gzip

import pytest
from test_workflow import model_dir, snakemake, write_config  # noqa: F401 (model_dir is a fixture)

pytestmark = pytest.mark.workflow

# How each run was made (commands, config): differs between the runs by design.
COMMAND_KEYS = ("##deepflows_command=", "##deepflows_call_variants_command=", "##deepflows_config_sha256=")


def tiny_run(tmp_path, model, shards: int):
    cfg = write_config(
        tmp_path,
        {
            "sample": "tiny",
            "reference": {"demo": {"length": 40_000}},
            "reads": {"simulate": {"depth": 10}},
            "make_examples": {"shards": shards},
            "model": str(model),
        },
    )
    run = snakemake(tmp_path, "--cores", "2", configfile=cfg, timeout=150)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return tmp_path / "results/tiny"


def vcf_lines(path):
    with gzip.open(path, "rt") as handle:
        return handle.read().splitlines()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, model_dir):  # noqa: F811
    return {n: tiny_run(tmp_path_factory.mktemp(f"shards{n}"), model_dir, n) for n in (1, 3)}


def test_calls_do_not_depend_on_the_number_of_shards(runs):
    one, three = (vcf_lines(runs[n] / "calls/calls.vcf.gz") for n in (1, 3))
    body = [line for line in one if not line.startswith("#")]
    assert len(body) > 0
    assert [line for line in one if not line.startswith(COMMAND_KEYS)] == [
        line for line in three if not line.startswith(COMMAND_KEYS)
    ]
    # what differs: the call_variants command names the shard files
    calls = {n: next(line for line in lines if line.startswith(COMMAND_KEYS[1])) for n, lines in ((1, one), (3, three))}
    assert "examples-00000-of-00001.zarr" in calls[1] and "examples-00002-of-00003.zarr" in calls[3]
    configs = {n: next(line for line in lines if line.startswith(COMMAND_KEYS[2])) for n, lines in ((1, one), (3, three))}
    assert configs[1] != configs[3] and len(configs[1].split("=", 1)[1]) == 64  # make_examples.shards differs


def test_benchmark_does_not_depend_on_the_number_of_shards(runs):
    one, three = ((runs[n] / "benchmark/summary.csv").read_bytes() for n in (1, 3))
    assert one == three
    assert one.startswith(b"Type,Filter,TRUTH.TOTAL,TRUTH.TP,TRUTH.FN,QUERY.TOTAL,QUERY.FP")


def test_vcf_header_carries_provenance(runs):
    header = [line for line in vcf_lines(runs[1] / "calls/calls.vcf.gz") if line.startswith("##")]
    keys = {line[2:].split("=", 1)[0] for line in header}
    assert {"source", "deepflows_version", "deepflows_model", "deepflows_model_sha256", "deepflows_command",
            "deepflows_call_variants_command", "reference", "deepflows_config_sha256"} <= keys  # fmt: skip
    sha = next(line for line in header if line.startswith("##deepflows_model_sha256="))
    assert len(sha.split("=", 1)[1]) == 64
