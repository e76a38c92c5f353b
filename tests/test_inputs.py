"""The input layer under bad input (issue 16): stale or mismatched indexes, indexes built by parallel jobs,
read errors, htslib's diagnosis and noise, malformed VCF records, sites-only and multi-sample VCFs, regions.

Each bad input must give one line naming the file (and its line, or the index to blame) and no traceback.
"""

from __future__ import annotations

import gzip
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pysam
import pytest
from synthetic import random_reference, tile_reads, write_bam

from deepflows.cli import main
from deepflows.errors import UserError
from deepflows.genomics.benchmark.gq_calibration import called_dosages
from deepflows.genomics.examples.readbatch import fetch_reads
from deepflows.genomics.io import hts
from deepflows.genomics.io.regions import parse_region, read_bed, resolve_regions
from deepflows.genomics.io.variants import (
    Regions,
    VcfReader,
    indexed_vcf,
    open_variant_file,
    vcf_problem,
    vcf_records,
)

CONTIG, LENGTH = "chrT", 30_000


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A plain FASTA (60 bases per line) with .fai, its bgzipped copy, and a sorted, indexed BAM of 100 bp
    reads at about 30x over the whole contig (a few hundred BGZF blocks' worth of reads)."""
    d = tmp_path_factory.mktemp("inputs")
    sequences = random_reference(d / "ref.fa", {CONTIG: LENGTH, "chrU": 700}, seed=5)
    pysam.tabix_compress(str(d / "ref.fa"), str(d / "ref.fa.gz"))
    pysam.faidx(str(d / "ref.fa.gz"))
    reads = tile_reads(sequences[CONTIG], 0, LENGTH, 30, 100, "r", rng=np.random.default_rng(2))
    bam = write_bam(d / "reads.bam", {CONTIG: LENGTH, "chrU": 700}, reads)
    return {"dir": d, "fasta": d / "ref.fa", "fasta_gz": d / "ref.fa.gz", "bam": bam, "seq": sequences}


def _copy(src: Path, dst: Path, *indexes: str) -> Path:
    """`src` (and the named index suffixes) copied, indexes after data so that they are not older."""
    shutil.copyfile(src, dst)
    for ext in indexes:
        shutil.copyfile(f"{src}{ext}", f"{dst}{ext}")
    return dst


def _age(path, seconds: int = 3600) -> None:
    """Make `path` older than it is (an index built before its data was rewritten)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def _refuses(call, *expected: str) -> str:
    with pytest.raises(UserError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and all(e in message for e in expected), message
    return message


def _rewrap(src: Path, dst: Path, width: int) -> None:
    """The same sequences with another line width (as a text editor or seqtk would rewrap them)."""
    lines = src.read_text().splitlines()
    out, seq = [], []
    for line in [*lines, ">end"]:
        if line.startswith(">"):
            joined = "".join(seq)
            out += [joined[i : i + width] for i in range(0, len(joined), width)]
            out.append(line)
            seq = []
        else:
            seq.append(line)
    dst.write_text("\n".join(out[:-1]) + "\n")


def _make_examples(capfd, *argv) -> tuple[int, list[str]]:
    """make-examples in this process; (exit code, stderr lines that are not logging)."""
    code = main(["make-examples", *map(str, argv)])
    err = [line for line in capfd.readouterr().err.splitlines() if " INFO " not in line]
    return code, err


def _one_error_line(err: list[str], *expected: str) -> None:
    assert len(err) == 1 and err[0].startswith("deepflows make-examples: error: "), err
    assert all(e in err[0] for e in expected), err[0]


# ------------------------------------------------------------------------------------ FASTA index (6c, 6d)


def test_good_indexes_are_accepted(sample):
    for path in (sample["fasta"], sample["fasta_gz"]):
        with hts.open_reference(path) as fasta:
            assert fasta.fetch(CONTIG, 100, 160) == sample["seq"][CONTIG][100:160]
    with hts.open_reads(sample["bam"], None) as reads:
        assert reads.count(CONTIG, 0, 1000) > 100


def test_rewrapped_fasta_with_its_old_fai_is_refused(sample, tmp_path):
    """6c: 60 -> 70 columns with the old .fai kept read garbage; older index, or one that does not fit."""
    fasta = tmp_path / "ref.fa"
    _rewrap(sample["fasta"], fasta, 70)
    shutil.copyfile(f"{sample['fasta']}.fai", f"{fasta}.fai")
    _age(f"{fasta}.fai")
    _refuses(lambda: hts.open_reference(fasta), f"{fasta}.fai is older than {fasta}", f"samtools faidx {fasta}")
    os.utime(f"{fasta}.fai")  # as new as the FASTA, still of the old layout
    _refuses(lambda: hts.open_reference(fasta), f"{fasta}.fai does not match {fasta}", "not 60 bases",
             f"rebuild it with `samtools faidx {fasta}`")  # fmt: skip
    Path(f"{fasta}.fai").unlink()
    with hts.open_reference(fasta) as rebuilt:
        assert rebuilt.fetch(CONTIG, 0, LENGTH) == sample["seq"][CONTIG]


def test_fai_of_another_fasta_is_refused(sample, tmp_path):
    """6d: another FASTA's .fai said "contig not in reference"; now the index is blamed."""
    fasta = _copy(sample["fasta"], tmp_path / "ref.fa")
    other = tmp_path / "other.fa"
    random_reference(other, {"chr1": 5000, "chr2": 300}, seed=1)
    shutil.copyfile(f"{other}.fai", f"{fasta}.fai")
    _refuses(lambda: hts.open_reference(fasta), f"{fasta}.fai does not match {fasta}", "'chr1'")


def test_bgzipped_fasta_indexes_are_checked_through_the_gzi(sample, tmp_path):
    rewrapped = tmp_path / "wide.fa"
    _rewrap(sample["fasta"], rewrapped, 70)
    fasta = tmp_path / "ref.fa.gz"
    pysam.tabix_compress(str(rewrapped), str(fasta))
    for ext in (".fai", ".gzi"):
        shutil.copyfile(f"{sample['fasta_gz']}{ext}", f"{fasta}{ext}")
    _refuses(lambda: hts.open_reference(fasta), f"{fasta}.fai does not match {fasta}")
    Path(f"{fasta}.gzi").write_bytes(b"\x01" + bytes(7))  # a count with no pairs: not a .gzi
    _refuses(lambda: hts.open_reference(fasta), f"{fasta}.gzi: not a BGZF index")
    Path(f"{fasta}.gzi").unlink()  # a missing .gzi is built (with the .fai) like a missing .fai
    Path(f"{fasta}.fai").unlink()
    with hts.open_reference(fasta) as rebuilt:
        assert rebuilt.fetch(CONTIG, 29_000, 29_100) == sample["seq"][CONTIG][29_000:29_100]


def test_corrupt_block_of_a_bgzipped_fasta_gives_htslibs_diagnosis(tmp_path):
    """A CRC error reaches the user's line, the file named (it was a ValueError of pysam's)."""
    plain = tmp_path / "big.fa"
    sequence = random_reference(plain, {"chrB": 400_000}, seed=9)["chrB"]
    fasta = tmp_path / "big.fa.gz"
    pysam.tabix_compress(str(plain), str(fasta))
    pysam.faidx(str(fasta))
    gzi = Path(f"{fasta}.gzi").read_bytes()
    block_end = int.from_bytes(gzi[8 + 16 * 2 : 16 + 16 * 2], "little")  # where the 3rd block after the 1st starts
    data = bytearray(fasta.read_bytes())
    data[block_end - 8 : block_end - 4] = bytes(b ^ 0xFF for b in data[block_end - 8 : block_end - 4])  # its CRC32
    fasta.write_bytes(bytes(data))
    for ext in (".fai", ".gzi"):
        os.utime(f"{fasta}{ext}")
    with hts.open_reference(fasta) as reference:
        assert reference.fetch("chrB", 0, 100) == sequence[:100]
        _refuses(lambda: reference.fetch("chrB", 0, 400_000), f"{fasta}: cannot read chrB:1-400000: ", "CRC32")


def test_gzip_empty_and_non_fasta_references(sample, tmp_path):
    plain_gzip = tmp_path / "ref.fa.gz"
    plain_gzip.write_bytes(gzip.compress(sample["fasta"].read_bytes()))
    _refuses(lambda: hts.open_reference(plain_gzip), str(plain_gzip), "not with bgzip")
    empty = tmp_path / "empty.fa"
    empty.touch()
    _refuses(lambda: hts.open_reference(empty), f"{empty}: reference FASTA is empty")
    text = tmp_path / "notes.fa"
    text.write_text("these are not sequences\n")
    _refuses(lambda: hts.open_reference(text), f"{text}: cannot index", "Format error", "is it a FASTA file?")
    assert not list(tmp_path.glob("*.tmp-*"))  # the failed build left no temporary index


# ------------------------------------------------------------------------------ index builds in parallel (1b)


def _open_and_fetch(paths: tuple[str, str]) -> int:
    bam, fasta = paths
    with hts.open_reference(fasta) as reference, hts.open_reads(bam, None) as reads:
        batch = fetch_reads(reads, bam, CONTIG, 0, LENGTH, 0)
        return len(batch) + len(reference.fetch(CONTIG, 0, 10))


def test_parallel_jobs_build_indexes_without_reading_half_a_one(sample, tmp_path):
    """1b: shards started together on an unindexed BAM and FASTA each build the index; none may read a
    half-written one (each builds under its own temporary name and renames it into place)."""
    for trial in range(3):
        bam = _copy(sample["bam"], tmp_path / f"reads{trial}.bam")
        fasta = _copy(sample["fasta_gz"], tmp_path / f"ref{trial}.fa.gz")
        # spawned, not forked: JAX's threads may be running in this process, and a fork could deadlock on them
        with ProcessPoolExecutor(6, mp_context=multiprocessing.get_context("spawn")) as pool:
            counts = list(pool.map(_open_and_fetch, [(str(bam), str(fasta))] * 6))
        assert len(set(counts)) == 1 and counts[0] > 1000
        assert Path(f"{bam}.bai").exists() and Path(f"{fasta}.fai").exists() and Path(f"{fasta}.gzi").exists()
    assert not list(tmp_path.glob("*.tmp-*"))  # the index builds' temporaries (outputs.temporary_path)


# --------------------------------------------------------------------------- read errors (2c, 2d, 2e, 3e, 3b)


def _cli_subprocess(*argv) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter: pysam's dealloc traceback comes when the process ends."""
    return subprocess.run([sys.executable, "-m", "deepflows.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def _bad_bam(sample, tmp_path, case: str) -> Path:
    data = sample["bam"].read_bytes()
    bam = tmp_path / f"{case}.bam"
    if case == "truncated":  # cut in the middle, the 28-byte EOF block re-appended
        bam.write_bytes(data[: len(data) // 2] + data[-28:])
    elif case == "corrupt":  # bytes flipped in the middle of the file
        middle = len(data) // 2
        bam.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :])
    shutil.copyfile(f"{sample['bam']}.bai", f"{bam}.bai")
    return bam


@pytest.mark.parametrize("case, expected", [
    ("truncated", ["the file is truncated, or the index is another file's", "samtools index"]),
    ("corrupt", ["cannot read chrT:", "truncated or corrupt file?"]),
])  # fmt: skip
def test_read_errors_are_one_line_without_traceback(sample, tmp_path, case, expected):
    """2c, 2d: a pysam dealloc traceback ("Exception ignored in ...") followed the message."""
    bam = _bad_bam(sample, tmp_path, case)
    out = tmp_path / "out.zarr"
    done = _cli_subprocess("make-examples", "--reads", bam, "--ref", sample["fasta"], "--out", out)
    err = [line for line in done.stderr.splitlines() if " INFO " not in line]
    assert done.returncode == 2 and len(err) == 1, done.stderr
    assert err[0].startswith(f"deepflows make-examples: error: {bam}: ") and all(e in err[0] for e in expected), err
    assert not out.exists()


def test_stale_bai_is_blamed_not_the_bam(sample, tmp_path, capfd):
    """2e: a BAM rewritten after its .bai was built (older index, or the index of another file)."""
    bam = tmp_path / "part.bam"
    pysam.view("-b", "-o", str(bam), str(sample["bam"]), f"{CONTIG}:15000-30000", catch_stdout=False)
    shutil.copyfile(f"{sample['bam']}.bai", f"{bam}.bai")
    _age(f"{bam}.bai")
    code, err = _make_examples(capfd, "--reads", bam, "--ref", sample["fasta"], "--out", tmp_path / "o.zarr")
    assert code == 2
    _one_error_line(err, f"{bam}.bai is older than {bam}; rebuild it with `samtools index {bam}`")
    os.utime(f"{bam}.bai")
    code, err = _make_examples(capfd, "--reads", bam, "--ref", sample["fasta"], "--out", tmp_path / "o.zarr")
    assert code == 2
    _one_error_line(err, f"its index {bam}.bai points to byte", "samtools index")


def test_bai_of_a_bam_with_other_contigs(sample, tmp_path):
    bam = write_bam(tmp_path / "one.bam", {CONTIG: LENGTH}, [])
    shutil.copyfile(f"{sample['bam']}.bai", f"{bam}.bai")
    _refuses(lambda: hts.open_reads(bam, None), f"{bam}.bai is not the index of {bam}", "2 references")


def test_bam_without_sq_lines_and_unsorted_bam(sample, tmp_path):
    no_sq = tmp_path / "nosq.bam"
    with pysam.AlignmentFile(str(no_sq), "wb", header={"HD": {"VN": "1.6"}}):
        pass
    _refuses(lambda: hts.open_reads(no_sq, None), f"{no_sq}: no @SQ lines")
    unsorted = tmp_path / "unsorted.bam"
    with pysam.AlignmentFile(str(sample["bam"])) as src, pysam.AlignmentFile(str(unsorted), "wb",
                                                                             template=src) as dst:  # fmt: skip
        for read in reversed(list(src)):
            dst.write(read)
    _refuses(lambda: hts.open_reads(unsorted, None), f"{unsorted}: cannot index", "Unsorted", "samtools sort")


def _cram(sample, tmp_path) -> Path:
    cram = tmp_path / "reads.cram"
    pysam.view("-C", "-T", str(sample["fasta"]), "-o", str(cram), str(sample["bam"]), catch_stdout=False)
    return cram


def test_cram_against_another_reference_names_it(sample, tmp_path, capfd):
    """3e: other bases said "truncated file" (htslib's MD5 mismatch is the cause); 3b: other lengths gave
    htslib warnings first, and the reference was not named."""
    cram = _cram(sample, tmp_path)
    other = tmp_path / "other.fa"
    other.write_text(sample["fasta"].read_text().replace("A", "C"))  # same names and lengths, other bases
    code, err = _make_examples(capfd, "--reads", cram, "--ref", other, "--out", tmp_path / "o.zarr")
    assert code == 2
    _one_error_line(err, f"{cram}: cannot read chrT:", "MD5", f"reference {other} is not the one")
    shorter = tmp_path / "short.fa"
    random_reference(shorter, {CONTIG: 20_000}, seed=5)
    code, err = _make_examples(capfd, "--reads", cram, "--ref", shorter, "--out", tmp_path / "o.zarr")
    assert code == 2
    _one_error_line(err, f"{cram}: contig 'chrT' is 30,000 bp in the CRAM but 20,000 bp in reference {shorter}")


def test_htslib_warnings_are_logged_after_success_and_dropped_on_failure(tmp_path, capfd, caplog):
    vcf = tmp_path / "undeclared.vcf"  # FORMAT GT used without its ##FORMAT line: htslib warns
    vcf.write_text("##fileformat=VCFv4.2\n##contig=<ID=chr1,length=100>\n"
                   "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS\nchr1\t5\t.\tA\tC\t.\tPASS\t.\tGT\t0/1\n")
    with caplog.at_level(logging.WARNING), open_variant_file(vcf, indexed=False) as handle:
        assert len(list(vcf_records(handle, vcf))) == 1
    assert "[W::" not in capfd.readouterr().err  # not printed raw ...
    assert any(str(vcf) in r.getMessage() and "GT" in r.getMessage() for r in caplog.records)  # ... but logged
    with pytest.raises(UserError, match="a bad one"), hts.htslib_call(vcf, "x"):
        os.write(2, b"[E::htslib_noise] something\n")
        raise UserError("a bad one")
    assert "htslib_noise" not in capfd.readouterr().err


# ------------------------------------------------------------------------------ VCF records (7c-7h, 8b-8e)


VCF_HEADER = ("##fileformat=VCFv4.2\n##contig=<ID=chrT,length=30000>\n"
              '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
              '##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="GQ">\n'
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{samples}\n")  # fmt: skip


def _vcf(sample, path: Path, genotypes: list[str] | None, *, samples=("S",), lines=None, index=True) -> Path:
    """A VCF of SNPs at 1,000, 2,000, ... (POS 1-based) with these genotypes (None: sites only); `lines` maps a
    record's number (0-based) to a replacement line. Bgzipped and indexed when `index`."""
    seq = sample["seq"][CONTIG]
    text = VCF_HEADER.format(samples="\t".join(samples)) if genotypes else VCF_HEADER.split("#CHROM")[0] + (
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")  # fmt: skip
    for i in range(10):
        pos = 1000 * (i + 1)
        alt = "A" if seq[pos - 1] != "A" else "C"
        fields = [CONTIG, str(pos), ".", seq[pos - 1], alt, "50", "PASS", "."]
        if genotypes:
            fields += ["GT:GQ", *(f"{genotypes[i % len(genotypes)]}:30" for _ in samples)]
        text += (lines or {}).get(i, "\t".join(fields)) + "\n"
    path.write_text(text)
    if not index:
        return path
    pysam.tabix_compress(str(path), f"{path}.gz", force=True)
    pysam.tabix_index(f"{path}.gz", preset="vcf", force=True)
    return Path(f"{path}.gz")


def _read_all(vcf: Path, workdir: Path) -> list:
    """Every record of a VCF, as benchmark and simulate read one (indexing a copy when it has no index)."""
    with VcfReader(indexed_vcf(vcf, workdir), name=vcf) as reader:
        return list(reader.fetch(CONTIG))


@pytest.mark.parametrize("line, expected", [
    ("chrT\t3000\t.\tA\tC", "line 8: 5 columns, a VCF record needs at least 8"),
    ("chrT 3000 . A C 50 PASS . GT:GQ 0/1:30", "line 8: 1 column, a VCF record needs at least 8 (separated by spaces"),
    ("chrT\t3000\t.\tA\tC\t50\tPASS\t.\tGT:GQ\t0/x:30", "line 8: Couldn't read GT data"),
    ("chrT\t3000x\t.\tA\tC\t50\tPASS\t.\tGT:GQ\t0/1:30", "line 8: POS '3000x' is not a position"),
    ("chrT\t3000\t.\tA\tC\t50\tPASS\t.\tGT:GQ", "line 8: 9 columns, the #CHROM line names 10"),
    ("chrT\t300\t.\tA\tC\t50\tPASS\t.\tGT:GQ\t0/1:30", "line 8: POS 300 after 2000: not sorted by position"),
])  # fmt: skip
def test_malformed_vcf_record_names_file_and_line(sample, tmp_path, capfd, line, expected):
    """7c, 7f, 7h: htslib said "error in vcf_parse" without file or line (when reading, or when indexing)."""
    vcf = _vcf(sample, tmp_path / "bad.vcf", ["0/1"], lines={2: line}, index=False)
    message = _refuses(lambda: _read_all(vcf, tmp_path), expected)
    assert message.startswith(f"{vcf}: "), message
    assert capfd.readouterr().err == ""  # htslib's own lines (and pysam's) do not come before ours


def test_vcf_problem_checks_order_only_when_asked(sample, tmp_path):
    vcf = _vcf(sample, tmp_path / "u.vcf", ["0/1"], lines={2: "chrT\t300\t.\tA\tC\t50\tPASS\t.\tGT:GQ\t0/1:30"},
               index=False)  # fmt: skip
    assert vcf_problem(vcf, "anything") == "anything"
    assert vcf_problem(vcf, "x", check_order=True).startswith("line 8: POS 300 after 2000")
    assert vcf_problem(vcf, "bad at chrT:4000") == "line 9: bad at chrT:4000"  # the record htslib names


def test_vcf_indexes_and_compression(sample, tmp_path):
    vcf = _vcf(sample, tmp_path / "t.vcf", ["0/1"])
    _age(f"{vcf}.tbi")
    _refuses(lambda: VcfReader(vcf), f"{vcf}.tbi is older than {vcf}; rebuild it with `tabix -p vcf {vcf}`")
    Path(f"{vcf}.tbi").write_bytes(Path(f"{vcf}.tbi").read_bytes()[:40])  # 7d: a broken .tbi
    _refuses(lambda: VcfReader(vcf), f"{vcf}.tbi: cannot be loaded as the index of {vcf}", "tabix -p vcf")
    plain_gzip = tmp_path / "g.vcf.gz"  # 7e: NotImplementedError in make-examples
    plain_gzip.write_bytes(gzip.compress((tmp_path / "t.vcf").read_bytes()))
    _refuses(lambda: VcfReader(plain_gzip), f"{plain_gzip}: gzip-compressed but not with bgzip", "bgzip")
    with VcfReader(indexed_vcf(plain_gzip, tmp_path), name=plain_gzip) as reader:  # benchmark's way: a copy
        assert len(list(reader.fetch(CONTIG))) == 10
    unindexed = _vcf(sample, tmp_path / "u.vcf", ["0/1"], index=False)
    _refuses(lambda: VcfReader(unindexed), f"{unindexed}: no index", "bgzip")


def test_sites_only_and_multi_sample_vcfs(sample, tmp_path):
    """8c, 8d, 8e: no genotypes gave all-hom-ref labels, 0 simulated variants, an IndexError; 8b: the first of
    two samples was compared unasked."""
    sites = _vcf(sample, tmp_path / "sites.vcf", None)
    _refuses(lambda: VcfReader(sites), f"{sites}: no sample column (a sites-only VCF)")
    bed = tmp_path / "all.bed"
    bed.write_text(f"{CONTIG}\t0\t{LENGTH}\n")
    with hts.open_reference(sample["fasta"]) as fasta:
        _refuses(lambda: list(called_dosages(str(sites), fasta, Regions.from_bed(bed))), "no sample column")
    two = _vcf(sample, tmp_path / "two.vcf", ["./."], samples=("A", "B"))
    _refuses(lambda: VcfReader(two), f"{two}: 2 samples (A, B)", "bcftools view -s")
    with VcfReader(two, sample="B") as reader:
        assert {v.genotype for v in reader.fetch(CONTIG)} == {None}
    _refuses(lambda: VcfReader(two, sample="C"), "no sample 'C'")


def test_make_examples_training_with_sites_only_truth(sample, tmp_path, capfd):
    truth = _vcf(sample, tmp_path / "sites.vcf", None)
    bed = tmp_path / "conf.bed"
    bed.write_text(f"{CONTIG}\t0\t{LENGTH}\n")
    code, err = _make_examples(capfd, "--reads", sample["bam"], "--ref", sample["fasta"], "--truth", truth,
                               "--confident", bed, "--out", tmp_path / "o.zarr")  # fmt: skip
    assert code == 2
    _one_error_line(err, f"{truth}: no sample column")
    assert not (tmp_path / "o.zarr").exists()


def test_simulate_with_unusable_truth(sample, tmp_path, capfd):
    truth = _vcf(sample, tmp_path / "homref.vcf", ["0/0"])
    code = main(["simulate", "--ref", str(sample["fasta"]), "--truth", str(truth), "--region", f"{CONTIG}:1-20000",
                 "--depth", "1", "--out-prefix", str(tmp_path / "sim")])  # fmt: skip
    err = [line for line in capfd.readouterr().err.splitlines() if " INFO " not in line]
    assert code == 2 and err == [f"deepflows simulate: error: {truth}: no usable variant in the simulated regions "
                                 "(skipped 10 ref-only GT)"], err  # fmt: skip
    assert not list(tmp_path.glob("sim*"))


# ------------------------------------------------------------------------------------- regions (5e, 5f)


def test_region_and_bed_messages(tmp_path):
    lengths = {CONTIG: LENGTH}
    _refuses(lambda: parse_region(f"{CONTIG}:0-100", lengths), "positions are 1-based; start must be >= 1")
    _refuses(lambda: parse_region(f"{CONTIG}:1-40000", lengths, "ref.fa"), "30,000 bp in the reference ref.fa")
    empty = tmp_path / "empty.bed"
    empty.write_text("track name=empty\n")
    _refuses(lambda: resolve_regions([str(empty)], lengths), f"{empty}: no intervals")
    _refuses(lambda: Regions.from_bed(empty, needed_for="nothing"), f"{empty}: no intervals, so nothing")
    assert Regions.from_bed(empty).contigs == []  # e.g. a stratification BED may be empty
    for text, expected in [
        (f"{CONTIG}\t10\t5\n", "line 2: end 5 is before start 10"),
        (f"{CONTIG}\tten\t20\n", "line 2: not a BED line"),
        (f"{CONTIG}\t-1\t20\n", "line 2: start -1 is negative"),
        ("chr9\t1\t20\n", "line 2: contig 'chr9' is not in the reference"),
    ]:
        bed = tmp_path / "bad.bed"
        bed.write_text(f"{CONTIG}\t0\t5\n" + text)
        _refuses(lambda: read_bed(bed, lengths), f"{bed}: {expected}")
    binary = tmp_path / "binary.bed.gz"
    binary.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)))
    _refuses(lambda: read_bed(binary), f"{binary}: line 1: cannot be read as text")


# ------------------------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_shared_data_indexes_pass_the_checks(shared_data):
    g = shared_data / "genomics"
    for name in ("ucsc.hg19.chr20.unittest.fasta.gz", "grch38.chr20_and_21_10M.fa.gz", "hs37d5.chr20.fa.gz"):
        hts.open_reference(g / name).close()
    for name in ("NA12878_S1.chr20.10_10p1mb.bam", "HG002_NIST_150bp_downsampled_30x.chr20.10_10p1mb.bam",
                 "test_pacbio.chr20_100kbp_at_9mb.bam"):  # fmt: skip
        hts.open_reads(g / name, None).close()
    hts.open_reads(g / "NA12878_S1.chr20.10_10p1mb.cram", g / "ucsc.hg19.chr20.unittest.fasta.gz").close()
    for name in ("test_nist.b37_chr20_100kbp_at_10mb.vcf.gz", "HG002_GRCh38_1_22_v4.2.1_benchmark.chr20.vcf.gz"):
        VcfReader(g / name).close()
