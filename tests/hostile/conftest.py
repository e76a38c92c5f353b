"""Fixtures of the hostile-input suite: tiny valid artefacts, made once per session by the stages themselves.

`valid` (session) holds a synthetic reference and BAM with 37 SNPs (chrA, 9 kb), its CRAM, a truth VCF (with a
sites-only twin) and confident BED, a calling shard set made by `make-examples --shard i/3 --chunk-size 4`
(several `inputs` chunks per shard), the probabilities store of `call-variants` with the shipped model, the
VCF of `postprocess`, a labelled shard and its shuffled training store, PNG/TIFF images, and a tiny In
Silico Labeling well (its PNGs, and the store isl-ingest makes of them). Cases copy what they damage;
everything else is used in place and never written to.

Set HOSTILE_REPORT=FILE.json to record, per case, the outcome and the last stderr line (for before/after
tables: see tests/hostile/README.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: synthetic.py
sys.path.insert(0, str(HERE))

from hostile_contract import RUNS  # noqa: E402
from hostile_data import BUILD_SECONDS, Valid, build_valid, build_variant_shards  # noqa: E402


@pytest.fixture(scope="session")
def valid(tmp_path_factory) -> Valid:
    return build_valid(tmp_path_factory.mktemp("valid"))


@pytest.fixture(scope="session")
def variant_shards(valid, tmp_path_factory) -> dict[str, Path]:
    """A shard of each of hostile_data.VARIANT_RUNS: other region, seed, reference, reads, realign, shard count
    (also as `valid.variants`, for the cases' makers)."""
    valid.variants = build_variant_shards(valid, tmp_path_factory.mktemp("variants"))
    return valid.variants


@pytest.fixture
def work(tmp_path) -> Path:
    """A case's scratch working directory: `in/` for the bad inputs it makes, `out/` for the outputs."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    return tmp_path


# ---------------------------------------------------------------------------- output locations that stop root
@pytest.fixture
def immutable_dir(tmp_path):
    """A directory that even root cannot create entries in (`chattr +i`); skipped where the file system has
    no immutable flag. The flag is always removed again, so pytest can clean up."""
    d = tmp_path / "locked"
    d.mkdir()
    proc = subprocess.run(["chattr", "+i", str(d)], capture_output=True, text=True)
    if proc.returncode != 0 or _can_create(d):
        subprocess.run(["chattr", "-i", str(d)], capture_output=True)
        pytest.skip(f"no immutable directories here (chattr +i: {proc.stderr.strip() or 'had no effect'})")
    try:
        yield d
    finally:
        subprocess.run(["chattr", "-i", str(d)], capture_output=True)


def _can_create(d: Path) -> bool:
    try:
        (d / ".probe").touch()
    except OSError:
        return False
    (d / ".probe").unlink()
    return True


# ------------------------------------------------------------------------------------------------ reporting
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    start = len(RUNS)
    yield
    item.stash[_RUNS_KEY] = RUNS[start:]


_RUNS_KEY = pytest.StashKey[list]()
_REPORT: dict = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if "hostile" not in str(item.path) or not os.environ.get("HOSTILE_REPORT"):
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        runs = item.stash.get(_RUNS_KEY, [])
        _REPORT[item.nodeid.split("::", 1)[-1]] = {
            "outcome": report.outcome,
            "rc": runs[-1].rc if runs else None,
            "last_line": runs[-1].last_line if runs else None,
            "reason": (str(report.longrepr)[-300:] if report.skipped else None),
        }


def pytest_sessionfinish(session):
    path = os.environ.get("HOSTILE_REPORT")
    if path and _REPORT:
        Path(path).write_text(json.dumps(_REPORT, indent=1, sort_keys=True) + "\n")


def pytest_terminal_summary(terminalreporter):
    if BUILD_SECONDS:
        terminalreporter.write_line(f"hostile suite: valid artefacts built in {BUILD_SECONDS[0]:.1f} s")
