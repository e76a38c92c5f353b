"""Reads from independent simulators (ART, dwgsim, Mason) over the sample's haplotypes, binned base
qualities, and bwa mem against a prebuilt index: what `deepflows simulate --simulator` must get right."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pysam
import pytest

from deepflows import cli
from deepflows.genomics.simulate.external import TOOLS
from deepflows.genomics.simulate.qualities import QUALITY_BINS, bin_qualities

LENGTH = 60_000
EXECUTABLES = {name: executable for name, (executable, _package) in TOOLS.items()}


def deepflows(*argv) -> int:
    return cli.main([str(a) for a in argv])


def installed(simulator: str):
    """Skip without the tool, except in CI (CI=true), which installs it and must not pass by skipping."""
    missing = shutil.which(EXECUTABLES[simulator]) is None and os.environ.get("CI") != "true"
    return pytest.mark.skipif(missing, reason=f"{EXECUTABLES[simulator]} not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ref") / "ref.fa"
    assert deepflows("make-reference", "--out", path, "--length", LENGTH, "--seed", 3) == 0
    return str(path)


def simulate(reference, prefix, simulator, *extra) -> str:
    assert deepflows("simulate", "--ref", reference, "--random-variants", "--variant-rate", 0.004, "--depth", 30,
                     "--seed", 5, "--simulator", simulator, "--out-prefix", prefix, *extra) == 0  # fmt: skip
    return str(prefix)


def het_snp_alt_fractions(prefix: str) -> list[float]:
    """Per heterozygous truth SNP: the fraction of the covering reads that carry its ALT base."""
    fractions = []
    with pysam.VariantFile(prefix + ".truth.vcf.gz") as vcf, pysam.AlignmentFile(prefix + ".bam") as bam:
        for v in vcf:
            gt = v.samples[0]["GT"]
            if len(v.ref) != 1 or len(v.alts) != 1 or len(v.alts[0]) != 1 or sorted(gt) != [0, 1]:
                continue
            for column in bam.pileup(v.chrom, v.start, v.start + 1, truncate=True, min_base_quality=0):
                bases = [b.upper() for b in column.get_query_sequences()]
                fractions.append(bases.count(v.alts[0]) / max(len(bases), 1))
    return fractions


@pytest.mark.parametrize("simulator", [pytest.param(s, marks=installed(s)) for s in ("art", "dwgsim", "mason")])
def test_external_simulator_reads_carry_the_sample_at_the_asked_depth(reference, tmp_path, simulator):
    prefix = simulate(reference, tmp_path / simulator, simulator)
    with pysam.AlignmentFile(prefix + ".bam") as bam:
        read_group = bam.header.to_dict()["RG"][0]
        reads = [r for r in bam if not r.is_unmapped]
    assert read_group["PM"] == ("art-HS25" if simulator == "art" else simulator)
    assert read_group["DS"] == f"simulator={read_group['PM']};quality_bins=none"
    assert all(r.query_name.startswith(f"{simulator}:demo:0:") for r in reads[:100])
    depth = sum(r.query_alignment_length for r in reads) / LENGTH
    assert 25 < depth < 33  # 30x asked, minus soft clips
    assert {r.query_length for r in reads} == {150}
    fractions = het_snp_alt_fractions(prefix)
    assert len(fractions) > 50
    assert 0.4 < np.median(fractions) < 0.6  # both haplotypes sequenced, half the depth each
    # each tool's own errors: not deepflows' model, and not error-free
    mismatches = sum(r.get_tag("NM") for r in reads) / sum(r.query_alignment_length for r in reads)
    assert 1e-4 < mismatches < 0.03


@installed("art")
def test_external_simulation_is_reproducible_and_seeded(reference, tmp_path):
    first = simulate(reference, tmp_path / "a", "art", "--art-profile", "HSXt")
    again = simulate(reference, tmp_path / "b", "art", "--art-profile", "HSXt")
    other = simulate(reference, tmp_path / "c", "art", "--art-profile", "HSXt", "--seed", 6)

    def body(prefix):
        with pysam.AlignmentFile(prefix + ".bam") as bam:
            return [r.to_string() for r in bam]

    assert body(first) == body(again)
    assert body(first) != body(other)


@pytest.mark.parametrize("scheme", ["novaseq", "hiseqx"])
def test_quality_bins_are_the_instruments_values(scheme):
    scores = np.arange(0, 45, dtype=np.uint8)
    binned = bin_qualities(scores, scheme)
    assert set(binned.tolist()) <= {value for _low, value in QUALITY_BINS[scheme]} | {0, 1}
    assert np.all(np.diff(binned.astype(int)) >= 0)  # a better score never gets a worse bin
    if scheme == "novaseq":
        assert binned[[2, 3, 14, 15, 30, 31, 41]].tolist() == [2, 12, 12, 23, 23, 37, 37]
    else:
        assert binned[[2, 9, 10, 19, 20, 24, 25, 29, 30, 34, 35, 39, 40, 41]].tolist() == [
            6, 6, 15, 15, 22, 22, 27, 27, 33, 33, 37, 37, 40, 40]
    assert bin_qualities(scores, "none") is scores


@pytest.mark.parametrize("simulator", ["deepflows", pytest.param("art", marks=installed("art"))])
def test_binned_qualities_keep_the_very_same_reads(reference, tmp_path, simulator):
    plain = simulate(reference, tmp_path / "plain", simulator)
    binned = simulate(reference, tmp_path / "binned", simulator, "--quality-bins", "novaseq")

    def reads(prefix):
        with pysam.AlignmentFile(prefix + ".bam") as bam:
            return {(r.query_name, r.is_read1): (r.query_sequence, r.reference_start, r.cigarstring,
                                                 np.array(r.query_qualities)) for r in bam}  # fmt: skip

    a, b = reads(plain), reads(binned)
    assert a.keys() == b.keys()
    assert all(a[k][:3] == b[k][:3] for k in a)
    qualities = np.concatenate([b[k][3] for k in b])
    assert set(np.unique(qualities).tolist()) <= {2, 12, 23, 37}
    assert np.array_equal(qualities, bin_qualities(np.concatenate([a[k][3] for k in b]).astype(np.uint8), "novaseq"))
    with pysam.AlignmentFile(binned + ".bam") as bam:
        assert bam.header.to_dict()["RG"][0]["DS"].endswith(";quality_bins=novaseq")


@pytest.mark.skipif(shutil.which("bwa") is None, reason="bwa not installed")
def test_bwa_aligns_against_a_prebuilt_index_elsewhere(reference, tmp_path):
    index = tmp_path / "index" / "reference"
    index.parent.mkdir()
    subprocess.run(["bwa", "index", "-p", str(index), reference], check=True, capture_output=True)
    prefix = simulate(reference, tmp_path / "bwa", "deepflows", "--aligner", "bwa", "--bwa-index", index,
                      "--depth", 5)  # fmt: skip
    with pysam.AlignmentFile(prefix + ".bam") as bam:
        programs = [pg["ID"] for pg in bam.header.to_dict()["PG"]]
        assert "bwa" in programs and sum(not r.is_unmapped for r in bam) > 1000
    assert not list((tmp_path.parent).glob("**/ref.fa.bwt"))  # the reference's folder was left alone


@pytest.mark.parametrize("argv, message", [
    (["--simulator", "art", "--gc-bias", "1"], "--gc-bias: library preparation is simulated by --simulator deepflows only"),
    (["--simulator", "art", "--read-length", "250"], "--read-length 250: ART's HS25 profile has reads of at most 150 bp"),
    (["--bwa-index", "nowhere/ref"], "--bwa-index nowhere/ref: needs --aligner bwa"),
    (["--aligner", "bwa", "--bwa-index", "nowhere/ref"], "--bwa-index nowhere/ref: no nowhere/ref.bwt"),
])  # fmt: skip
def test_bad_simulator_options_get_one_clear_line(reference, tmp_path, capsys, argv, message):
    if "art" in argv and shutil.which("art_illumina") is None and os.environ.get("CI") != "true":
        pytest.skip("art_illumina not installed")
    prefix = tmp_path / "bad"
    assert deepflows("simulate", "--ref", reference, "--random-variants", "--out-prefix", prefix, *argv) != 0
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # no partial outputs
