"""The contract helper itself: each clause catches what it should, and a proper refusal passes (no subprocess)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_contract import Run, assert_refused, assert_refused_or_warned, contract_violations, matches

GOOD = "deepflows make-examples: error: /w/in/reads.bam.bai is older than /w/in/reads.bam; rebuild it"


def run(stderr: str, rc: int = 2, tmp: Path = Path("/nonexistent/work"), **kw) -> Run:
    return Run("make-examples", [], tmp, rc, "", stderr, **kw)


def test_a_proper_refusal_passes():
    assert_refused(run("INFO reading\n" + GOOD + "\n\n"), names=["reads.bam.bai"], words=["older|stale"])


@pytest.mark.parametrize("rc,expected", [(0, "accepted"), (-11, "SIGSEGV"), (139, "SIGSEGV"), (-9, "SIGKILL")])
def test_exit_status(rc, expected):
    assert any(expected in v for v in contract_violations(run(GOOD, rc=rc)))


@pytest.mark.parametrize("stderr,expected", [
    ("INFO only progress", "0 lines start with"),
    (GOOD + "\n" + GOOD, "2 lines start with"),
    (GOOD + "\nOSError: Closing failed", "not the last"),
    ("Traceback (most recent call last):\n  x\n" + GOOD, "'Traceback'"),
    ("Exception ignored in: <x>\n" + GOOD, "'Exception ignored'"),
    ("[W::hts_idx_load3] The index file is older than the data file\n" + GOOD, "raw htslib"),
    ("deepflows make-examples: error: internal error, please report it: KeyError: 'x'", "internal error"),
])  # fmt: skip
def test_stderr_clauses(stderr, expected):
    assert any(expected in v for v in contract_violations(run(stderr))), contract_violations(run(stderr))


def test_names_and_words_are_required():
    bad = contract_violations(run(GOOD), names=["truth.vcf.gz"], words=["line 57"])
    assert any("does not name the file" in v for v in bad) and any("does not say the problem" in v for v in bad)


def test_words_are_not_matched_in_the_scratch_directory_name(tmp_path):
    work = tmp_path / "test_case_6c_fai_stale0"
    line = f"deepflows make-examples: error: {work}/in/ref.fa: cannot read"
    assert any("does not say the problem" in v for v in contract_violations(run(line, tmp=work), words=["fai"]))


def test_outputs_and_temporaries(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "ex.zarr").mkdir()
    (out / "ex.zarr.tmp-host-123").mkdir()
    (out / "stray.txt").write_text("x")
    r = run(GOOD, before={out: set()}, after={out: {"ex.zarr", "ex.zarr.tmp-host-123", "stray.txt"}},
            existed={out / "ex.zarr": None})  # fmt: skip
    bad = contract_violations(r)
    assert any("output left behind" in v for v in bad)
    assert any("temporary left" in v and "ex.zarr.tmp-host-123" in v for v in bad)
    assert any("new entries left" in v and "stray.txt" in v for v in bad)


def test_refused_or_warned_wants_a_warning_naming_the_file():
    silent = run("INFO 0 examples", rc=0)
    with pytest.raises(AssertionError, match="silent"):
        assert_refused_or_warned(silent, names=["empty.bed"])
    warned = run("WARNING /w/in/empty.bed: no intervals\nINFO 0 examples", rc=0)
    assert_refused_or_warned(warned, names=["empty.bed"])


def test_patterns():
    assert matches("X is OLDER than Y", "stale|older") and not matches("fine", "stale|older")


def test_words_are_not_matched_in_file_names():
    line = "deepflows make-examples: error: /w/in/zero.tif: an image needs y and x axes"
    assert any("does not say the problem" in v for v in contract_violations(run(line), words=["zero"]))
    assert not contract_violations(run(line), names=["zero.tif"], words=["axes"])
