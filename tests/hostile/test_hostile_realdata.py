"""The probe's cases on REAL data (NA12878, chr20:10.00-10.01 Mb; ../shared/data/genomics): a CRAM decoded
against a reference with other bases (3e), a truncated BAM (2c), a malformed truth record (7c), and six shards
started together on the unindexed BAM and bgzipped FASTA (1b)."""

from __future__ import annotations

import gzip
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pysam
import pytest
from hostile_cases import CORRUPT, LINE, Case, check_case, params
from hostile_contract import accepted_violations, assert_accepted, run_stage
from hostile_data import bgzip_index, concatenated, newer_than

pytestmark = pytest.mark.realdata

BAM = "NA12878_S1.chr20.10_10p1mb.bam"
CRAM = "NA12878_S1.chr20.10_10p1mb.cram"
HG19 = "ucsc.hg19.chr20.unittest.fasta.gz"
TRUTH = "test_nist.b37_chr20_100kbp_at_10mb.vcf.gz"
CONFIDENT = "test_nist.b37_chr20_100kbp_at_10mb.bed"
WINDOW = "chr20:10000000-10010000"
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def hg19_with_other_bases(d, valid, work, g):
    """hg19 chr20 with every A<->C and G<->T swapped inside the window: same names and lengths, other MD5."""
    seq = pysam.FastaFile(str(g / HG19)).fetch("chr20")
    lo, hi = 9_990_000, 10_020_000
    swapped = seq[lo:hi].translate(str.maketrans("ACGTacgt", "CATGcatg"))
    ref = d / "hg19-other-bases.fa"
    with open(ref, "w") as out:
        out.write(">chr20\n")
        full = seq[:lo] + swapped + seq[hi:]
        for i in range(0, len(full), 60):
            out.write(full[i : i + 60] + "\n")
    pysam.faidx(str(ref))
    return {"ref": ref}


def truncated_real_bam(d, valid, work, g):
    bam = d / BAM
    data = (g / BAM).read_bytes()
    bam.write_bytes(data[: int(len(data) * 0.05)] + BGZF_EOF)  # the window is the first tenth of the file
    shutil.copy2(g / f"{BAM}.bai", f"{bam}.bai")
    newer_than(Path(f"{bam}.bai"), bam)  # as a copy made after the BAM: only the data betrays the cut
    return {"reads": bam}


def truth_with_five_column_record(d, valid, work, g):
    lines = gzip.decompress((g / TRUTH).read_bytes()).decode().splitlines()
    i = next(k for k, x in enumerate(lines) if not x.startswith("#") and int(x.split("\t")[1]) > 10_003_000)
    lines[i] = "\t".join(lines[i].split("\t")[:5])
    plain = d / "truth.vcf"
    plain.write_text("\n".join(lines) + "\n")
    return {"truth": bgzip_index(plain), "line": i + 1}


def with_shared(make):
    """A `make` with the shared files as placeholders, plus what `make(d, valid, work, genomics_dir)` returns."""

    def wrapped(d, valid, work):
        g = SHARED[0]
        return {"reads": g / BAM, "cram": g / CRAM, "ref": g / HG19, "confident": g / CONFIDENT,
                **(make(d, valid, work, g) if make else {})}  # fmt: skip

    return wrapped


SHARED: list[Path] = []  # ../shared/data/genomics, set by the test from the shared_data fixture
ME = f"make-examples --reads {{reads}} --ref {{ref}} --regions {WINDOW} --out {{out}}/ex.zarr"

CASES = [
    Case("3e-real-cram-reference-with-other-bases", "make-examples", ME.replace("{reads}", "{cram}"),
         with_shared(hg19_with_other_bases), ("{out}/ex.zarr",), ("hg19-other-bases.fa",), ("MD5",), timeout=300),
    Case("2c-real-truncated-bam", "make-examples", ME, with_shared(truncated_real_bam), ("{out}/ex.zarr",), (BAM,),
         (CORRUPT,), timeout=300),
    Case("7c-real-truth-five-columns", "make-examples", ME + " --truth {truth} --confident {confident}",
         with_shared(truth_with_five_column_record), ("{out}/ex.zarr",), ("truth.vcf.gz",), (LINE,), timeout=300),
]


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_realdata(case, valid, work, shared_data):
    SHARED[:] = [shared_data / "genomics"]
    check_case(case, valid, work)


# ---------------------------------------------------------------------------------------- 1b on real inputs
JOBS = 6


@pytest.fixture(scope="module")
def real_window_examples(shared_data, tmp_path_factory) -> Path:
    """The window's examples in one shard, made with the shared data's own (pre-built) indexes."""
    g, d = shared_data / "genomics", tmp_path_factory.mktemp("real-baseline")
    out = d / "examples.zarr"
    run = run_stage("make-examples", ["--reads", g / BAM, "--ref", g / HG19, "--regions", WINDOW, "--out", out], cwd=d)
    assert_accepted(run)
    return out


@pytest.mark.parametrize("trial", range(2))
def test_1b_real_shards_together_on_unindexed_inputs(trial, shared_data, real_window_examples, work):
    """1b as the probe ran it: six shards at once on a copy of the NA12878 BAM without its .bai and of the
    bgzipped hg19 FASTA without .fai/.gzi; all succeed, with the examples of the indexed inputs."""
    g = shared_data / "genomics"
    bam, ref = shutil.copy2(g / BAM, work / "in" / BAM), shutil.copy2(g / HG19, work / "in" / HG19)
    outs = [work / "out" / f"examples-{i:05d}-of-{JOBS:05d}.zarr" for i in range(JOBS)]
    with ThreadPoolExecutor(JOBS) as pool:
        runs = list(pool.map(lambda i: run_stage("make-examples", ["--reads", bam, "--ref", ref, "--regions", WINDOW,
                                                                  "--shard", f"{i}/{JOBS}", "--out", outs[i]],
                                                 cwd=work, timeout=300), range(JOBS)))  # fmt: skip
    problems = [f"shard {i}/{JOBS}: {p} (last line: {r.last_line})" for i, r in enumerate(runs)
                for p in accepted_violations(r)]  # fmt: skip
    assert not problems, "\n".join(problems)
    got, want = concatenated(outs), concatenated([real_window_examples])
    for key in want:
        assert np.array_equal(got[key], want[key]), f"{key} differs from the examples made with pre-built indexes"
