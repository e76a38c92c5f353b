"""Hostile inputs: damaged, stale or mismatched reads, references, indexes, VCFs, BEDs and regions.

Case ids are the probe's numbers of issue 16 where it had them (6c, 2e, 7d, ...); the others are ours. Each
case builds its bad input under the case's `in/` from the session's valid artefacts.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pysam
import pytest
from hostile_cases import (ACCEPTED, CORRUPT, LINE, NOT_GENOTYPED, REFUSED_OR_CORRECT, REFUSED_OR_WARNED,
                           STALE_INDEX, Case, check_case, params)  # fmt: skip
from hostile_contract import assert_accepted, run_stage
from hostile_data import CONTIG, SITES, bgzip_index, examples_equal, newer_than, synthetic_bam, write_vcf

BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
ME = "make-examples --reads {bam} --ref {ref} --shard 1/3 --chunk-size 4 --out {out}/ex.zarr"
ME_TRAIN = ("make-examples --reads {bam} --ref {ref} --truth {truth} --confident {bed} --chunk-size 4 "
            "--out {out}/ex.zarr")
ME_OUT = ("{out}/ex.zarr",)
MARKDUP = "mark-duplicates --reads {bam} --out {out}/md.bam"
MARKDUP_OUT = ("{out}/md.bam", "{out}/md.bam.bai")
BENCH = "benchmark --truth {truth} --confident {bed} --query {vcf} --ref {ref} --out {out}/bench"
BENCH_OUT = ("{out}/bench",)
GQ = "gq-calibration --calls {vcf} --truth {truth} --confident {bed} --ref {ref} --out {out}/gq.tsv --plot {out}/gq.png"
GQ_OUT = ("{out}/gq.tsv", "{out}/gq.png")


# ------------------------------------------------------------------------------------------- small utilities
def age(path: Path, seconds: float) -> None:
    """Move `path`'s mtime `seconds` into the past (negative: into the future) relative to now."""
    t = os.path.getmtime(path) - seconds
    os.utime(path, (t, t))


def older_than(index: Path, data: Path) -> None:
    t = os.path.getmtime(data) - 100
    os.utime(index, (t, t))


def flip(path: Path, at: float = 0.5, n: int = 32) -> None:
    """XOR `n` bytes in the middle of a file with 0xFF (size unchanged)."""
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i : i + n] = bytes(b ^ 0xFF for b in data[i : i + n])
    path.write_bytes(bytes(data))


def copy_with_index(src: Path, dst_dir: Path, suffix: str, name: str | None = None) -> Path:
    dst = dst_dir / (name or src.name)
    shutil.copy2(src, dst)
    shutil.copy2(f"{src}{suffix}", f"{dst}{suffix}")
    return dst


def fasta_text(seq: str, name: str = CONTIG, width: int = 60) -> str:
    return f">{name}\n" + "".join(seq[i : i + width] + "\n" for i in range(0, len(seq), width))


def same_as_valid_shard(index: int):
    def correct(run, work, values):
        examples_equal(work / "out" / "ex.zarr", values["shards"][index])

    return correct


# ------------------------------------------------------------------------------------------------- makers
def rewrapped_fasta(fai_age: str):
    """6c: the FASTA rewrapped from 60 to 70 columns, its old .fai kept (older than the FASTA, or touched)."""

    def make(d, valid, work):
        seq = pysam.FastaFile(str(valid.ref)).fetch(CONTIG)
        ref = d / "ref.fa"
        ref.write_text(fasta_text(seq, width=70))
        shutil.copy2(f"{valid.ref}.fai", f"{ref}.fai")
        (older_than if fai_age == "older" else newer_than)(Path(f"{ref}.fai"), ref)
        return {"ref": ref}

    return make


def foreign_fai(d, valid, work):
    """6d: the .fai of another FASTA (other contigs) beside the FASTA, and newer than it."""
    ref = d / "ref.fa"
    shutil.copy2(valid.ref, ref)
    (d / "other.fa").write_text(fasta_text("ACGT" * 1500, "chr7") + fasta_text("TTGCA" * 400, "chr8"))
    pysam.faidx(str(d / "other.fa"))
    shutil.copy2(d / "other.fa.fai", f"{ref}.fai")
    newer_than(Path(f"{ref}.fai"), ref)
    return {"ref": ref}


def truncated_bam(keep_index: bool):
    """2c: the BAM cut at 60% with a BGZF end-of-file block re-appended (so it passes the EOF check), with its
    index copied along (newer than the cut BAM), or without one (the stage builds it, or refuses)."""

    def make(d, valid, work):
        bam = d / "reads.bam"
        data = valid.bam.read_bytes()
        bam.write_bytes(data[: int(len(data) * 0.6)] + BGZF_EOF)
        if keep_index:
            shutil.copy2(f"{valid.bam}.bai", f"{bam}.bai")
            newer_than(Path(f"{bam}.bai"), bam)
        return {"bam": bam}

    return make


def corrupt_bam(d, valid, work):
    """2d: bytes flipped in the middle of the BAM (same size); its index kept and newer."""
    bam = copy_with_index(valid.bam, d, ".bai")
    flip(bam, 0.5)
    newer_than(Path(f"{bam}.bai"), bam)
    return {"bam": bam}


def stale_bai(d, valid, work):
    """2e: the BAM rewritten (other reads) after it was indexed; the old .bai is older than the new BAM."""
    bam = copy_with_index(valid.bam, d, ".bai")
    seq = pysam.FastaFile(str(valid.ref)).fetch(CONTIG)
    fresh = synthetic_bam(work / "fresh.bam", seq, seed=2)  # what the user meant: other reads, with their index
    shutil.copy2(fresh, bam)
    older_than(Path(f"{bam}.bai"), bam)
    return {"bam": bam, "fresh": fresh}


def stale_bai_correct(run, work, values):
    """2e repaired: the examples are those of the rewritten BAM, as made with a fresh index."""
    expected = work / "expected.zarr"
    check = run_stage("make-examples", ["--reads", values["fresh"], "--ref", values["ref"], "--shard", "1/3",
                                        "--chunk-size", "4", "--out", expected], cwd=work)  # fmt: skip
    assert_accepted(check)
    examples_equal(work / "out" / "ex.zarr", expected)


def truth_with_bad_record(kind: str):
    """7c/7f/7h: a truth VCF whose 20th record is malformed; `{line}` is its line number in the file."""

    def make(d, valid, work):
        lines = valid.truth_plain.read_text().splitlines()
        first = next(i for i, x in enumerate(lines) if not x.startswith("#"))
        i = first + 19
        fields = lines[i].split("\t")
        if kind == "five-columns":
            fields = fields[:5]
        elif kind == "pos":
            fields[1] = "12x4"
        elif kind == "ref":
            fields[3] = "N?7"
        lines[i] = "\t".join(fields)
        plain = d / "truth.vcf"
        plain.write_text("\n".join(lines) + "\n")
        out = {"truth_plain": plain, "line": i + 1}
        try:  # bgzip + tabix where tabix can index it (a non-integer POS it cannot)
            out["truth"] = bgzip_index(plain)
        except (OSError, ValueError):
            out["truth"] = Path(str(plain) + ".gz")
            pysam.tabix_compress(str(plain), str(out["truth"]), force=True)
        return out

    return make


def broken_tbi(d, valid, work):
    """7d: the truth's .tbi replaced by garbage (newer than the VCF)."""
    truth = copy_with_index(valid.truth, d, ".tbi")
    tbi = Path(f"{truth}.tbi")
    tbi.write_bytes(gzip.compress(b"TBI\x01" + bytes(range(256)) * 4))
    newer_than(tbi, truth)
    return {"truth": truth}


def broken_tbi_correct(run, work, values):
    """7d repaired (index rebuilt): the labels are those of the valid truth."""
    import zarr

    expected = work / "expected.zarr"
    p = values
    argv = ["--reads", p["bam"], "--ref", p["ref"], "--truth", p["valid_truth"], "--confident", p["bed"],
            "--chunk-size", "4", "--out", expected]  # fmt: skip
    check = run_stage("make-examples", argv, cwd=work)
    assert_accepted(check)
    examples_equal(work / "out" / "ex.zarr", expected)
    got, want = zarr.open_group(str(work / "out" / "ex.zarr"))["label"][:], zarr.open_group(str(expected))["label"][:]
    assert np.array_equal(got, want)


def plain_gzip_truth(d, valid, work):
    """7e: the truth compressed with plain gzip (not BGZF), as `gzip truth.vcf` makes it; no index."""
    truth = d / "truth.vcf.gz"
    truth.write_bytes(gzip.compress(valid.truth_plain.read_bytes()))
    return {"truth": truth}


def empty_bed(d, valid, work):
    (d / "empty.bed").write_text("")
    return {"bed_regions": d / "empty.bed"}


def inverted_bed(d, valid, work):
    (d / "inverted.bed").write_text(f"{CONTIG}\t100\t600\n{CONTIG}\t2500\t900\n{CONTIG}\t4000\t4100\n")
    return {"bed_regions": d / "inverted.bed"}


def unknown_contig_bed(d, valid, work):
    (d / "regions.bed").write_text(f"{CONTIG}\t100\t600\nchrQ\t10\t900\n")
    return {"bed_regions": d / "regions.bed"}


def targets_bed(*lines: str):
    """Capture targets for make-examples --targets: `{targets}`."""

    def make(d, valid, work):
        (d / "targets.bed").write_text("".join(f"{line}\n" for line in lines))
        return {"targets": d / "targets.bed"}

    return make


def not_a_bam(d, valid, work):
    (d / "reads.bam").write_text("@HD\tVN:1.6\nthis is not a BAM file\n")
    return {"bam": d / "reads.bam"}


def bam_without_sq(d, valid, work):
    """Unaligned reads in a BAM whose header has no @SQ lines."""
    bam = d / "nosq.bam"
    header = {"HD": {"VN": "1.6", "SO": "unsorted"}, "RG": [{"ID": "rg1", "SM": "s"}]}
    with pysam.AlignmentFile(str(bam), "wb", header=header) as out:
        for i in range(20):
            a = pysam.AlignedSegment(out.header)
            a.query_name, a.query_sequence, a.flag = f"u{i}", "ACGT" * 25, 4
            a.query_qualities = pysam.qualitystring_to_array("I" * 100)
            out.write(a)
    return {"bam": bam}


def not_fasta(d, valid, work):
    ref = d / "ref.fa"
    ref.write_text("this is not a FASTA file\njust some words\n")
    return {"ref": ref}


def reads_directory(d, valid, work):
    (d / "reads.bam").mkdir()
    return {"bam": d / "reads.bam"}


def empty_bam(d, valid, work):
    (d / "empty.bam").write_bytes(b"")
    return {"bam": d / "empty.bam"}


def renamed_reference(d, valid, work):
    """A reference whose contig is called chrZ: none of the BAM's contigs are in it."""
    seq = pysam.FastaFile(str(valid.ref)).fetch(CONTIG)
    ref = d / "chrZ.fa"
    ref.write_text(fasta_text(seq, "chrZ"))
    pysam.faidx(str(ref))
    return {"ref": ref}


def plain_gzip_reference(d, valid, work):
    ref = d / "ref.fa.gz"
    ref.write_bytes(gzip.compress(valid.ref.read_bytes()))
    return {"ref": ref}


def garbage_vcf(d, valid, work):
    vcf = d / "query.vcf"
    vcf.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    return {"vcf": vcf}


def existing_out(d, valid, work):
    (work / "out" / "bench").mkdir()
    (work / "out" / "bench" / "summary.csv").write_text("an earlier result\n")
    return {}


def two_sample_query(d, valid, work):
    """8b: a query VCF with two samples, the first all ./. (the calls are in the second)."""
    seq = pysam.FastaFile(str(valid.ref)).fetch(CONTIG)
    plain = write_vcf(d / "query.vcf", seq, sample="EMPTY", extra_sample="NA12878", genotype=lambda k: "./.")
    return {"vcf": bgzip_index(plain)}


def all_snps_found(run, work, values):
    """The benchmark scored the chosen sample: every truth SNP a true positive."""
    import csv

    rows = list(csv.DictReader(open(work / "out" / "bench" / "summary.csv")))
    snp = next(r for r in rows if r["Type"] == "SNP" and r["Filter"] == "PASS")
    assert snp["TRUTH.TP"] == str(len(SITES)), f"accepted, but SNP PASS row: {snp}"


def with_valid_truth(make):
    def wrapped(d, valid, work):
        return {"valid_truth": valid.truth, **make(d, valid, work)}

    return wrapped


def without_bgzf_eof(key: str, name: str, index: bool = False):
    """A bgzipped VCF cut just before its 28-byte end-of-file block: every record still reads, htslib only
    warns, and a stage that did not check would work on a copy cut short at a block boundary."""

    def make(d, valid, work):
        source = Path(valid.placeholders[key])
        (d / name).write_bytes(source.read_bytes()[:-28])
        if index:
            shutil.copy(f"{source}.tbi", d / f"{name}.tbi")
        return {key: d / name}

    return make


def benchmark_tsv(text: str):
    def make(d, valid, work):
        (d / "job.benchmark.tsv").write_text(text)
        return {"bench_tsv": d / "job.benchmark.tsv"}

    return make


RUN_TIMES = "run-times --out {out}/run_times.tsv make_examples={bench_tsv}"


# ------------------------------------------------------------------------------------------------- the table
CASES = [
    # references and their .fai
    Case("6c-rewrapped-fasta-old-fai", "make-examples", ME, rewrapped_fasta("older"), ME_OUT, ("ref.fa.fai",),
         (STALE_INDEX,), expect=REFUSED_OR_CORRECT, correct=same_as_valid_shard(1),
         note="refused naming the stale .fai, or the index rebuilt and the examples right"),
    Case("6c-rewrapped-fasta-touched-fai", "make-examples", ME, rewrapped_fasta("newer"), ME_OUT, ("ref.fa.fai",),
         (STALE_INDEX,), expect=REFUSED_OR_CORRECT, correct=same_as_valid_shard(1),
         note="the .fai is newer than the FASTA: only its content shows that it does not fit"),
    Case("6d-fai-of-another-fasta", "make-examples", ME, foreign_fai, ME_OUT, ("ref.fa.fai",), (STALE_INDEX,),
         expect=REFUSED_OR_CORRECT, correct=same_as_valid_shard(1)),
    Case("own-fasta-not-fasta", "make-examples", ME, not_fasta, ME_OUT, ("ref.fa",), ("FASTA",)),
    Case("own-reference-plain-gzip", "make-examples", ME, plain_gzip_reference, ME_OUT, ("ref.fa.gz",),
         ("bgzip|BGZF|gzip",)),
    Case("own-contigs-not-in-reference", "make-examples", ME, renamed_reference, ME_OUT, ("chrZ.fa|reads.bam",),
         ("contig",)),
    # reads and their index
    Case("2c-truncated-bam-eof-reappended", "make-examples", ME, truncated_bam(keep_index=True), ME_OUT,
         ("reads.bam",), (CORRUPT,)),
    Case("own-truncated-bam-no-index", "make-examples", ME, truncated_bam(keep_index=False), ME_OUT, ("reads.bam",),
         (CORRUPT,)),
    Case("2d-corrupt-bam-bytes-flipped", "make-examples", ME, corrupt_bam, ME_OUT, ("reads.bam",), (CORRUPT,)),
    Case("2e-stale-bai", "make-examples", ME, stale_bai, ME_OUT, ("reads.bam.bai",), (STALE_INDEX,),
         expect=REFUSED_OR_CORRECT, correct=stale_bai_correct, note="the error blames the index, not the BAM"),
    Case("3b-3e-cram-other-reference-bases", "make-examples",
         "make-examples --reads {cram} --ref {ref_other} --shard 0/3 --chunk-size 4 --out {out}/ex.zarr",
         None, ME_OUT, ("ref_other.fa",), ("MD5",), note="htslib's MD5 mismatch reaches the line; no htslib noise"),
    Case("own-bam-without-sq", "make-examples", ME, bam_without_sq, ME_OUT, ("nosq.bam",),
         ("@SQ|contig|header|unaligned|no reference|sequence",)),
    Case("own-reads-is-directory", "make-examples", ME, reads_directory, ME_OUT, ("reads.bam",),
         ("directory|not a regular file",)),
    Case("own-empty-bam", "make-examples", ME, empty_bam, ME_OUT, ("empty.bam",), ("empty|truncat|0 bytes",)),
    # regions
    Case("5e-region-zero-start", "make-examples", ME + f" --regions {CONTIG}:0-100", None, ME_OUT,
         (f"{CONTIG}:0-100",), ("1-based",)),
    Case("5f-empty-bed", "make-examples", ME + " --regions {bed_regions}", empty_bed, ME_OUT, ("empty.bed",),
         ("empty|no region",), expect=REFUSED_OR_WARNED),
    Case("own-bed-end-before-start", "make-examples", ME + " --regions {bed_regions}", inverted_bed, ME_OUT,
         ("inverted.bed",), ("line 2|bed:2:",)),
    Case("own-bed-unknown-contig", "make-examples", ME + " --regions {bed_regions}", unknown_contig_bed, ME_OUT,
         ("regions.bed",), ("chrQ",)),
    Case("own-region-unknown-contig", "make-examples", ME + " --regions chrQ:1-100", None, ME_OUT, ("chrQ",)),
    Case("own-shard-out-of-range", "make-examples", ME.replace("1/3", "3/3"), None, ME_OUT, ("3/3",)),
    # datatype presets and capture targets
    Case("own-preset-unknown", "make-examples", ME + " --preset pacbio", None, ME_OUT, ("--preset",),
         ("unknown preset", "wgs, wes")),
    Case("own-preset-wes-without-targets", "make-examples", ME + " --preset wes", None, ME_OUT, ("--targets",),
         ("wes",)),
    Case("own-targets-other-contigs", "make-examples", ME + " --preset wes --targets {targets}",
         targets_bed("20\t100\t600", "20\t2500\t2900"), ME_OUT, ("targets.bed",), ("'20'", "line 1")),
    Case("own-targets-empty", "make-examples", ME + " --preset wes --targets {targets}", targets_bed(), ME_OUT,
         ("targets.bed",), ("no interval",)),
    Case("own-targets-outside-regions", "make-examples", ME + f" --targets {{targets}} --regions {CONTIG}:1-500",
         targets_bed(f"{CONTIG}\t5000\t5100"), ME_OUT, ("targets.bed",), ("no target",)),
    # mark-duplicates
    Case("own-markdup-truncated-bam", "mark-duplicates", MARKDUP, truncated_bam(keep_index=False), MARKDUP_OUT,
         ("reads.bam",), (f"cannot read|{CORRUPT}",)),
    Case("own-markdup-corrupt-bam", "mark-duplicates", MARKDUP, corrupt_bam, MARKDUP_OUT, ("reads.bam",),
         (f"cannot read|{CORRUPT}",)),
    Case("own-markdup-not-a-bam", "mark-duplicates", MARKDUP, not_a_bam, MARKDUP_OUT, ("reads.bam",),
         (f"not a BAM|{CORRUPT}",)),
    Case("own-markdup-empty-bam", "mark-duplicates", MARKDUP, empty_bam, MARKDUP_OUT, ("empty.bam",),
         ("empty|truncat|0 bytes",)),
    Case("own-markdup-out-not-bam", "mark-duplicates", MARKDUP.replace("md.bam", "md.sam"), None,
         ("{out}/md.sam",), ("md.sam",), ("name it",)),
    # truth VCFs
    Case("8c-training-sites-only-truth", "make-examples", ME_TRAIN.replace("{truth}", "{sites_only}"), None, ME_OUT,
         ("sites_only.vcf.gz",), (NOT_GENOTYPED,)),
    Case("8d-simulate-sites-only-truth", "simulate",
         "simulate --ref {ref} --truth {sites_only} --depth 2 --read-length 100 --out-prefix {out}/sim", None,
         ("{out}/sim.bam", "{out}/sim.truth.vcf.gz", "{out}/sim.confident.bed"), ("sites_only.vcf.gz",),
         (NOT_GENOTYPED,)),
    # reads of an independent simulator (simulate --simulator): its truth, its profile, its aligner's index
    Case("own-simulate-art-sites-only-truth", "simulate",
         "simulate --ref {ref} --truth {sites_only} --simulator art --depth 2 --read-length 100 --out-prefix {out}/sim",
         None, ("{out}/sim.bam", "{out}/sim.truth.vcf.gz", "{out}/sim.confident.bed"), ("sites_only.vcf.gz",),
         (NOT_GENOTYPED,)),
    Case("own-simulate-art-read-longer-than-profile", "simulate",
         "simulate --ref {ref} --truth {truth} --simulator art --art-profile NS50 --depth 2 --read-length 100 "
         "--out-prefix {out}/sim", None, ("{out}/sim.bam", "{out}/sim.truth.vcf.gz", "{out}/sim.confident.bed"),
         ("--read-length 100",), ("NS50 profile has reads of at most 75 bp",)),
    Case("own-simulate-bwa-index-missing", "simulate",
         "simulate --ref {ref} --truth {truth} --depth 2 --read-length 100 --aligner bwa --bwa-index {out}/none/ref "
         "--out-prefix {out}/sim", None, ("{out}/sim.bam", "{out}/sim.truth.vcf.gz", "{out}/sim.confident.bed"),
         ("none/ref",), ("make it with `bwa index",)),
    Case("8e-gq-calibration-sites-only-calls", "gq-calibration", GQ.replace("{vcf}", "{sites_only}"), None, GQ_OUT,
         ("sites_only.vcf.gz",), (NOT_GENOTYPED,)),
    Case("7c-truth-record-five-columns", "make-examples", ME_TRAIN, truth_with_bad_record("five-columns"), ME_OUT,
         ("truth.vcf.gz",), (LINE,)),
    Case("7c-benchmark-truth-five-columns", "benchmark", BENCH.replace("{truth}", "{truth_plain}"),
         truth_with_bad_record("five-columns"), BENCH_OUT, ("truth.vcf",), (LINE,)),
    Case("7f-benchmark-truth-pos-not-integer", "benchmark", BENCH.replace("{truth}", "{truth_plain}"),
         truth_with_bad_record("pos"), BENCH_OUT, ("truth.vcf",), (LINE,)),
    Case("7h-truth-record-bad-ref", "make-examples", ME_TRAIN, truth_with_bad_record("ref"), ME_OUT,
         ("truth.vcf.gz",), (LINE,)),
    Case("7h-benchmark-truth-bad-ref", "benchmark", BENCH.replace("{truth}", "{truth_plain}"),
         truth_with_bad_record("ref"), BENCH_OUT, ("truth.vcf",), (LINE,)),
    Case("7d-broken-tbi", "make-examples", ME_TRAIN, with_valid_truth(broken_tbi), ME_OUT, ("truth.vcf.gz.tbi",),
         ("index|corrupt|invalid|damaged",), expect=REFUSED_OR_CORRECT, correct=broken_tbi_correct),
    Case("7e-plain-gzip-truth", "make-examples", ME_TRAIN, plain_gzip_truth, ME_OUT, ("truth.vcf.gz",),
         ("bgzip|BGZF|gzip",)),
    # benchmark
    Case("own-benchmark-query-garbage", "benchmark", BENCH, garbage_vcf, BENCH_OUT, ("query.vcf",)),
    Case("own-benchmark-out-exists", "benchmark", BENCH, existing_out, BENCH_OUT, ("bench",), ("exist",),
         note="every other stage refuses an existing output; benchmark overwrote it"),
    Case("8b-benchmark-first-sample-all-missing", "benchmark", BENCH, two_sample_query, BENCH_OUT,
         ("EMPTY|NA12878|sample",), expect=REFUSED_OR_WARNED,
         note="a refusal, or a warning naming the sample it scores; never silently 0 TP"),
    Case("8b-benchmark-query-sample-chosen", "benchmark", BENCH + " --query-sample NA12878", two_sample_query,
         BENCH_OUT, expect=ACCEPTED, correct=all_snps_found,
         note="the way out that 8b's refusal offers: name the sample (--query-sample)"),
    # Snakemake benchmark files read by run-times
    Case("own-run-times-not-a-benchmark-file", "run-times", RUN_TIMES, benchmark_tsv("garbage\n"),
         ("{out}/run_times.tsv",), ("job.benchmark.tsv",), ("not a snakemake benchmark",)),
    Case("own-run-times-value-not-a-number", "run-times", RUN_TIMES, benchmark_tsv("s\tmax_rss\nabc\t10\n"),
         ("{out}/run_times.tsv",), ("job.benchmark.tsv",), ("line 2",)),
    # a bgzipped VCF cut short at a block boundary
    Case("own-truncated-bgzf-query", "benchmark", BENCH, without_bgzf_eof("vcf", "cut.vcf.gz"), BENCH_OUT,
         ("cut.vcf.gz",), ("truncated",)),
    Case("own-truncated-bgzf-truth", "make-examples", ME_TRAIN, without_bgzf_eof("truth", "cut.vcf.gz", index=True),
         ME_OUT, ("cut.vcf.gz",), ("truncated",)),
    Case("own-truncated-bgzf-calls", "gq-calibration", GQ, without_bgzf_eof("vcf", "cut.vcf.gz"), GQ_OUT,
         ("cut.vcf.gz",), ("truncated",)),
]


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_input(case, valid, work):
    check_case(case, valid, work)
