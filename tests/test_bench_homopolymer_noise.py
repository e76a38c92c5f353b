"""bench/homopolymer_noise.py: the one-base-shorter share of spanning reads at invariant and het-deletion runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pysam
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from homopolymer_noise import HET_DEL, INVARIANT, measure_case

FLANK = "ACGTGCATGCAGTCAGTGCATCGATGCATGCTAGCTAGCATCGATCGTAGCTAGCATCGATGCATCG"  # no run of 3


def _write_reads(path: Path, contig_length: int, reads: list[tuple[int, list[tuple[int, int]], str]]) -> None:
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": contig_length}]}
    unsorted = path.with_suffix(".unsorted.bam")
    with pysam.AlignmentFile(str(unsorted), "wb", header=header) as out:
        for i, (start, cigar, seq) in enumerate(reads):
            read = pysam.AlignedSegment(out.header)
            read.query_name, read.reference_id, read.reference_start = f"r{i}", 0, start
            read.cigartuples, read.query_sequence, read.mapping_quality = cigar, seq, 60
            read.query_qualities = pysam.qualitystring_to_array("I" * len(seq))
            out.write(read)
    pysam.sort("-o", str(path), str(unsorted))
    pysam.index(str(path))


@pytest.mark.parametrize("deleted", [0, 3])
def test_shares_of_shorter_reads_at_invariant_and_het_runs(tmp_path, deleted):
    # two runs of 12 A and 12 T; the truth holds a het one-base deletion at the second
    reference = FLANK + "A" * 12 + FLANK + "T" * 12 + FLANK
    fasta = tmp_path / "ref.fa"
    fasta.write_text(f">chr1\n{reference}\n")
    pysam.faidx(str(fasta))
    a_run = len(FLANK)
    t_run = 2 * len(FLANK) + 12
    truth = tmp_path / "truth.vcf"
    record = f"chr1\t{t_run}\t.\t{reference[t_run - 1 : t_run + 1]}\t{reference[t_run - 1]}\t.\tPASS\t.\tGT\t0|1\n"
    truth.write_text(f"##fileformat=VCFv4.2\n##contig=<ID=chr1,length={len(reference)}>\n"
                     '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
                     "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS\n" + record)  # fmt: skip
    truth_gz = pysam.tabix_index(str(truth), preset="vcf", force=True)
    bed = tmp_path / "confident.bed"
    bed.write_text(f"chr1\t0\t{len(reference)}\n")
    # ten reads over the A run, `deleted` of them a base short; ten over the T run, four a base short
    reads = []
    for run, shorter in ((a_run, deleted), (t_run, 4)):
        start = run - 20
        for i in range(10):
            if i < shorter:
                seq = reference[start:run] + reference[run + 1 : run + 40]
                reads.append((start, [(0, run - start), (2, 1), (0, 39)], seq))
            else:
                reads.append((start, [(0, run + 40 - start)], reference[start : run + 40]))
    bam = tmp_path / "reads.bam"
    _write_reads(bam, len(reference), reads)
    case = {"reads": bam, "ref": fasta, "truth": Path(truth_gz), "confident": bed,
            "regions": [f"chr1:1-{len(reference)}"]}  # fmt: skip
    shares = measure_case(case, min_run=10, anchor=3, min_reads=10)
    assert shares[INVARIANT] == [pytest.approx(deleted / 10)]
    assert shares[HET_DEL] == [pytest.approx(0.4)]
    # runs with too few spanning reads are not counted
    assert measure_case(case, min_run=10, anchor=3, min_reads=11) == {INVARIANT: [], HET_DEL: []}
