"""GQ calibration: each genotyped call is right or wrong against the truth's allele copies, binned by GQ."""

from __future__ import annotations

import pysam
import pytest

from deepflows.genomics.benchmark.gq_calibration import calibration, write_tsv

REF = "ACGTTGCAAC" * 20
HEADER = """##fileformat=VCFv4.2
##contig=<ID=c,length=200>
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype quality">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS
"""


def vcf(path, records: list[str]) -> str:
    path.with_suffix("").write_text(HEADER + "".join(r + "\n" for r in records))
    return pysam.tabix_index(str(path.with_suffix("")), preset="vcf", force=True)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "ref.fa").write_text(">c\n" + REF + "\n")
    pysam.faidx(str(tmp_path / "ref.fa"))
    (tmp_path / "conf.bed").write_text("c\t0\t150\n")
    truth = vcf(tmp_path / "truth.vcf.gz", [
        "c\t11\t.\tA\tG\t50\tPASS\t.\tGT\t0/1",
        "c\t21\t.\tA\tT\t50\tPASS\t.\tGT\t1/1",
        "c\t41\t.\tA\tC\t50\tPASS\t.\tGT\t0/1",
    ])  # fmt: skip
    calls = vcf(tmp_path / "calls.vcf.gz", [
        "c\t11\t.\tA\tG\t30\tPASS\t.\tGT:GQ\t0/1:32",  # right
        "c\t21\t.\tA\tT\t30\tPASS\t.\tGT:GQ\t0/1:33",  # wrong: truth is hom-alt
        "c\t31\t.\tA\tG\t9\tPASS\t.\tGT:GQ\t0/1:7",  # wrong: not in the truth
        "c\t41\t.\tA\tC\t0\tRefCall\t.\tGT:GQ\t0/0:8",  # wrong: a hom-ref call of a truth het
        "c\t51\t.\tA\tT\t0\tRefCall\t.\tGT:GQ\t0/0:25",  # right: a hom-ref call where the truth has nothing
        "c\t171\t.\tA\tT\t30\tPASS\t.\tGT:GQ\t0/1:25",  # outside the confident regions: not counted
    ])  # fmt: skip
    return calls, truth, str(tmp_path / "conf.bed"), str(tmp_path / "ref.fa")


def test_bins_count_right_and_wrong_genotypes(files, tmp_path):
    rows = {r["gq"]: r for r in calibration(*files)}
    assert set(rows) == {"5-9", "20-29", "30-39"}
    assert (rows["5-9"]["calls"], rows["5-9"]["errors"]) == (2, 2)
    assert (rows["20-29"]["calls"], rows["20-29"]["errors"]) == (1, 0) and rows["20-29"]["observed_phred"] is None
    assert (rows["30-39"]["calls"], rows["30-39"]["errors"]) == (2, 1)
    assert rows["30-39"]["expected_error"] == pytest.approx((10**-3.2 + 10**-3.3) / 2)
    write_tsv(list(rows.values()), str(tmp_path / "cal.tsv"))
    lines = (tmp_path / "cal.tsv").read_text().splitlines()
    assert lines[0].split("\t")[:3] == ["gq", "calls", "errors"] and len(lines) == 4
