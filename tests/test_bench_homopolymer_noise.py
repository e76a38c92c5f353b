"""bench/homopolymer_noise.py: the one-base-shorter share of spanning reads at invariant and het-deletion runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from synthetic import Read, write_bam
from test_labels import write_fasta, write_vcf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from homopolymer_noise import HET_DEL, INVARIANT, measure_case

FLANK = "ACGTGCATGCAGTCAGTGCATCGATGCATGCTAGCTAGCATCGATCGTAGCTAGCATCGATGCATCG"  # no run of 3
CONTIG = "chrT"  # test_labels.write_vcf's contig


@pytest.mark.parametrize("deleted", [0, 3])
def test_shares_of_shorter_reads_at_invariant_and_het_runs(tmp_path, deleted):
    # two runs of 12 A and 12 T; the truth holds a het one-base deletion at the second
    reference = FLANK + "A" * 12 + FLANK + "T" * 12 + FLANK
    fasta = write_fasta(tmp_path / "ref.fa", {CONTIG: reference})
    a_run = len(FLANK)
    t_run = 2 * len(FLANK) + 12
    truth = write_vcf(tmp_path / "truth.vcf", {CONTIG: reference},
                      [(t_run - 1, reference[t_run - 1 : t_run + 1], [reference[t_run - 1]], "0|1")])  # fmt: skip
    bed = tmp_path / "confident.bed"
    bed.write_text(f"{CONTIG}\t0\t{len(reference)}\n")
    # ten reads over the A run, `deleted` of them a base short; ten over the T run, four a base short
    reads = []
    for run, shorter in ((a_run, deleted), (t_run, 4)):
        start = run - 20
        for i in range(10):
            name = f"r{run}-{i}"
            if i < shorter:
                seq = reference[start:run] + reference[run + 1 : run + 40]
                reads.append(Read(name, start, seq, [(0, run - start), (2, 1), (0, 39)]))
            else:
                reads.append(Read(name, start, reference[start : run + 40], [(0, run + 40 - start)]))
    bam = write_bam(tmp_path / "reads.bam", {CONTIG: len(reference)}, reads)
    case = {"reads": bam, "ref": fasta, "truth": truth, "confident": bed,
            "regions": [f"{CONTIG}:1-{len(reference)}"]}  # fmt: skip
    shares = measure_case(case, min_run=10, anchor=3, min_reads=10)
    assert shares[INVARIANT] == [pytest.approx(deleted / 10)]
    assert shares[HET_DEL] == [pytest.approx(0.4)]
    # runs with too few spanning reads are not counted
    assert measure_case(case, min_run=10, anchor=3, min_reads=11) == {INVARIANT: [], HET_DEL: []}
