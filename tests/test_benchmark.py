"""`deepflows benchmark`: a catalogue of cases with the counts hap.py (vcfeval engine) gives, the CSV and
errors formats, input handling, and a real-data cross-check against DeepVariant's own calls."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import pysam
import pytest

from deepflows.cli import main
from deepflows.errors import UserError
from deepflows.genomics.benchmark.compare import COLUMNS, ERROR_COLUMNS, BenchmarkOptions, compare
from deepflows.genomics.haplotypes import apply_edits

CONTIG = "chrB"


def _random_bases(length: int, seed: int) -> str:
    return "".join(random.Random(seed).choice("ACGT") for _ in range(length))


# A 2 kb contig: a homopolymer at 100 (A at 101..108), a CA repeat at 200 (201..210), a fixed stretch at
# 600 for a complex variant; random elsewhere.
HOMOPOLYMER, DINUCLEOTIDE, COMPLEX = 100, 200, 600
REFERENCE = (
    _random_bases(HOMOPOLYMER, 11)
    + "GAAAAAAAAC"
    + _random_bases(DINUCLEOTIDE - HOMOPOLYMER - 10, 12)
    + "TCACACACACAG"
    + _random_bases(COMPLEX - DINUCLEOTIDE - 12, 13)
    + "ACGTCAGT"
    + _random_bases(2000 - COMPLEX - 8, 14)
)
LENGTH = len(REFERENCE)

# Records: (start 0-based, REF, ALTs, GT[, FILTER]).
HP_DEL_LEFT = (HOMOPOLYMER, "GA", ("G",))
HP_DEL_RIGHT = (HOMOPOLYMER + 7, "AA", ("A",))
DI_DEL_LEFT = (DINUCLEOTIDE, "TCA", ("T",))
DI_DEL_RIGHT = (DINUCLEOTIDE + 8, "ACA", ("A",))
HP_INS_LEFT = (HOMOPOLYMER, "G", ("GA",))
HP_INS_RIGHT = (HOMOPOLYMER + 8, "A", ("AA",))
HP_INS_PADDED = (HOMOPOLYMER, "GAA", ("GAAA",))  # not trimmed: same insertion, longer spelling


def other_base(base: str, k: int = 0) -> str:
    return [b for b in "ACGT" if b != base][k]


def snp(start: int, gt: str = "0/1", *rest, k: int = 0) -> tuple:
    return (start, REFERENCE[start], (other_base(REFERENCE[start], k),), gt, *rest)


def spelled(records) -> str:
    return apply_edits(REFERENCE, 0, sorted((s, r, alts[0]) for s, r, alts, *_ in records))


def test_equivalent_spellings_are_really_equivalent():
    assert spelled([HP_DEL_LEFT]) == spelled([HP_DEL_RIGHT])
    assert spelled([DI_DEL_LEFT]) == spelled([DI_DEL_RIGHT])
    assert spelled([HP_INS_LEFT]) == spelled([HP_INS_RIGHT]) == spelled([HP_INS_PADDED])
    for start, ref, _ in (HP_DEL_LEFT, HP_DEL_RIGHT, DI_DEL_LEFT, DI_DEL_RIGHT, HP_INS_RIGHT, HP_INS_PADDED):
        assert REFERENCE[start : start + len(ref)] == ref


# ------------------------------------------------------------------------------------------- helpers


def write_vcf(path: Path, records: list[tuple], *, index: bool = True, sample: bool = True) -> Path:
    header = [
        "##fileformat=VCFv4.2",
        '##FILTER=<ID=PASS,Description="All filters passed">',
        '##FILTER=<ID=LowQual,Description="low quality">',
        '##FILTER=<ID=RefCall,Description="reference call">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        f"##contig=<ID={CONTIG},length={LENGTH}>",
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO" + ("\tFORMAT\tSAMPLE" if sample else ""),
    ]
    lines = []
    for start, ref, alts, gt, *rest in sorted(records, key=lambda r: r[0]):
        fields = [CONTIG, str(start + 1), ".", ref, ",".join(alts), "50", rest[0] if rest else "PASS", "."]
        lines.append("\t".join(fields + (["GT", gt] if sample else [])))
    path.write_text("\n".join(header + lines) + "\n")
    return Path(pysam.tabix_index(str(path), preset="vcf", force=True)) if index else path


@pytest.fixture(scope="module")
def fasta(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ref") / "ref.fa"
    path.write_text(f">{CONTIG}\n{REFERENCE}\n")
    pysam.faidx(str(path))
    return path


@pytest.fixture
def bench(tmp_path, fasta):
    """bench(truth, query, bed=[(0, LENGTH)], **options) -> BenchmarkResult."""
    runs = iter(range(1000))

    def run(truth, query, bed=((0, LENGTH),), strata=None, regions=None):
        n = next(runs)
        bed_path = tmp_path / f"confident{n}.bed"
        bed_path.write_text("".join(f"{CONTIG}\t{s}\t{e}\n" for s, e in bed))
        stratify = []
        for name, intervals in (strata or {}).items():
            strat_path = tmp_path / f"{name}{n}.bed"
            strat_path.write_text("".join(f"{CONTIG}\t{s}\t{e}\n" for s, e in intervals))
            stratify.append((name, strat_path))
        return compare(BenchmarkOptions(
            truth=write_vcf(tmp_path / f"truth{n}.vcf", truth),
            confident=bed_path,
            query=write_vcf(tmp_path / f"query{n}.vcf", query),
            ref=fasta,
            regions=regions,
            stratify=stratify,
        ))  # fmt: skip

    return run


def counts(result, type_: str, filter_: str = "PASS", subset: str = "*") -> dict:
    row = result.row(type_, filter_, subset)
    keys = ("TRUTH.TOTAL", "TRUTH.TP", "TRUTH.FN", "QUERY.TOTAL", "QUERY.TP", "QUERY.FP", "QUERY.UNK")
    return dict(zip(("T", "TP", "FN", "Q", "QTP", "FP", "UNK"), (row[k] for k in keys)))


def errors(result) -> list[tuple]:
    return [(e["side"], e["decision"], e["pos"], e["type"], e["reason"], e["filter_rows"]) for e in result.errors]


def tp(n_truth: int, n_query: int | None = None) -> dict:
    n_query = n_truth if n_query is None else n_query
    return {"T": n_truth, "TP": n_truth, "FN": 0, "Q": n_query, "QTP": n_query, "FP": 0, "UNK": 0}


NONE = {"T": 0, "TP": 0, "FN": 0, "Q": 0, "QTP": 0, "FP": 0, "UNK": 0}


# ------------------------------------------------------------------------------------------- the catalogue


def test_identical_calls(bench):
    records = [snp(300), snp(350, "1/1"), (*HP_DEL_LEFT, "0/1"), (*DI_DEL_LEFT, "1/1")]
    result = bench(records, records)
    for filter_ in ("ALL", "PASS"):
        assert counts(result, "SNP", filter_) == tp(2)
        assert counts(result, "INDEL", filter_) == tp(2)
    assert result.errors == []
    assert result.matching.exact == result.matching.clusters == 4


@pytest.mark.parametrize(
    ("truth", "query"),
    [
        (HP_DEL_LEFT, HP_DEL_RIGHT),
        (HP_DEL_RIGHT, HP_DEL_LEFT),
        (DI_DEL_LEFT, DI_DEL_RIGHT),
        (DI_DEL_RIGHT, DI_DEL_LEFT),
        (HP_INS_LEFT, HP_INS_RIGHT),
        (HP_INS_LEFT, HP_INS_PADDED),
    ],
    ids=["hp-del-right", "hp-del-left", "di-del-right", "di-del-left", "ins-other-anchor", "ins-padded"],
)
@pytest.mark.parametrize("gt", ["0/1", "1/1"])
def test_shifted_and_padded_indels_match(bench, truth, query, gt):
    result = bench([(*truth, gt)], [(*query, gt)])
    assert counts(result, "INDEL") == tp(1)
    assert counts(result, "SNP") == NONE
    assert result.errors == []


def test_mnp_in_query_matches_two_snps_in_truth(bench):
    start = 300
    ref = REFERENCE[start : start + 2]
    alt = other_base(ref[0]) + other_base(ref[1])
    truth = [(start, ref[0], (alt[0],), "0/1"), (start + 1, ref[1], (alt[1],), "0/1")]
    result = bench(truth, [(start, ref, (alt,), "0/1")])
    assert counts(result, "SNP") == tp(2)  # the MNP counts as 2 SNPs
    assert counts(result, "INDEL") == NONE
    # and the other way round, with a reference base inside the MNP
    ref3 = REFERENCE[start : start + 3]
    mnp = other_base(ref3[0]) + ref3[1] + other_base(ref3[2])
    truth = [(start, ref3[0], (mnp[0],), "1/1"), (start + 2, ref3[2], (mnp[2],), "1/1")]
    result = bench([(start, ref3, (mnp,), "1/1")], truth)
    assert counts(result, "SNP") == tp(2)


def test_complex_allele_matches_its_parts(bench):
    # REFERENCE[600:608] = ACGTCAGT: truth writes C>G at 601 and a deletion of the C at 604 (anchor T at 603);
    # the query writes both as one complex allele CGTC>GGT
    start = COMPLEX
    assert REFERENCE[start : start + 8] == "ACGTCAGT"
    truth = [(start + 1, "C", ("G",), "1/1"), (start + 3, "TC", ("T",), "1/1")]
    query = [(start + 1, "CGTC", ("GGT",), "1/1")]
    assert spelled(truth) == spelled(query)
    result = bench(truth, query)
    assert counts(result, "SNP") == {**tp(1, 0)}
    assert counts(result, "INDEL") == {**tp(1, 1)}  # the complex allele counts as one INDEL
    assert result.matching.haplotype == 1


def test_het_alt_truth(bench):
    start = 400
    base = REFERENCE[start]
    a, b = other_base(base, 0), other_base(base, 1)
    truth = [(start, base, (a, b), "1/2")]
    # the same 1/2 call: both alleles TP
    assert counts(bench(truth, [(start, base, (a, b), "2/1")]), "SNP") == tp(2)
    # written as two records, one per alt
    assert counts(bench(truth, [(start, base, (a,), "0/1"), (start, base, (b,), "0/1")]), "SNP") == tp(2)
    # alts in the other order
    assert counts(bench(truth, [(start, base, (b, a), "1/2")]), "SNP") == tp(2)
    # only one allele called, 0/1: a genotype mismatch, as vcfeval compares whole genotypes
    result = bench(truth, [(start, base, (a,), "0/1")])
    assert counts(result, "SNP") == {"T": 2, "TP": 0, "FN": 2, "Q": 1, "QTP": 0, "FP": 1, "UNK": 0}
    assert result.row("SNP", "PASS")["FP.gt"] == 1
    assert errors(result) == [
        ("truth", "FN", start + 1, "SNP", "genotype_mismatch", "ALL,PASS"),
        ("truth", "FN", start + 1, "SNP", "missing", "ALL,PASS"),
        ("query", "FP", start + 1, "SNP", "genotype_mismatch", "ALL,PASS"),
    ]
    # a 1/2 query against a 0/1 truth
    result = bench([(start, base, (a,), "0/1")], [(start, base, (a, b), "1/2")])
    assert counts(result, "SNP") == {"T": 1, "TP": 0, "FN": 1, "Q": 2, "QTP": 0, "FP": 2, "UNK": 0}


@pytest.mark.parametrize(("truth_gt", "query_gt"), [("0/1", "1/1"), ("1/1", "0/1"), ("0/1", "1")])
def test_genotype_mismatch_is_fn_and_fp(bench, truth_gt, query_gt):
    result = bench([snp(300, truth_gt)], [snp(300, query_gt)])
    assert counts(result, "SNP") == {"T": 1, "TP": 0, "FN": 1, "Q": 1, "QTP": 0, "FP": 1, "UNK": 0}
    row = result.row("SNP", "PASS")
    assert (row["FP.gt"], row["FP.al"]) == (1, 0)
    assert [e["reason"] for e in result.errors] == ["genotype_mismatch", "genotype_mismatch"]


def test_haploid_call_counts_as_homozygous(bench):
    assert counts(bench([snp(300, "1/1")], [snp(300, "1")]), "SNP") == tp(1)


def test_genotype_mismatch_of_a_shifted_indel(bench):
    result = bench([(*HP_DEL_LEFT, "0/1")], [(*HP_DEL_RIGHT, "1/1")])
    assert counts(result, "INDEL") == {"T": 1, "TP": 0, "FN": 1, "Q": 1, "QTP": 0, "FP": 1, "UNK": 0}
    assert [e["reason"] for e in result.errors] == ["genotype_mismatch", "genotype_mismatch"]


def test_allele_mismatch(bench):
    result = bench([snp(300, k=0)], [snp(300, k=1)])
    assert counts(result, "SNP") == {"T": 1, "TP": 0, "FN": 1, "Q": 1, "QTP": 0, "FP": 1, "UNK": 0}
    row = result.row("SNP", "PASS")
    assert (row["FP.gt"], row["FP.al"]) == (0, 1)
    assert [e["reason"] for e in result.errors] == ["allele_mismatch", "allele_mismatch"]


def test_confident_region_edges(bench):
    bed = [(500, 1500)]
    truth = [snp(499), snp(500), snp(1499), snp(1500)]
    query = [snp(499), snp(500), snp(1499), snp(1500), snp(700)]
    result = bench(truth, query, bed=bed)
    # truth outside is not counted; query outside is UNK (in QUERY.TOTAL, as hap.py counts it)
    assert counts(result, "SNP") == {"T": 2, "TP": 2, "FN": 0, "Q": 5, "QTP": 2, "FP": 1, "UNK": 2}
    row = result.row("SNP", "PASS")
    assert row["METRIC.Frac_NA"] == pytest.approx(2 / 5)
    assert row["METRIC.Precision"] == pytest.approx(2 / 3)
    # an unmatched query call outside is UNK, never FP; an unmatched truth variant outside is ignored
    result = bench([snp(499), snp(1600)], [snp(1500)], bed=bed)
    assert counts(result, "SNP") == {"T": 0, "TP": 0, "FN": 0, "Q": 1, "QTP": 0, "FP": 0, "UNK": 1}
    assert result.errors == []


def test_indel_counts_when_its_reference_span_overlaps_the_bed(bench):
    # hap.py tags a record with the regions its REF span [POS, POS+len(REF)) overlaps
    deletion = (DINUCLEOTIDE, "TCA", ("T",), "0/1")  # span 200..202
    for bed, inside in (([(202, 300)], True), ([(203, 300)], False), ([(100, 201)], True)):
        result = bench([deletion], [deletion], bed=bed)
        assert counts(result, "INDEL") == (tp(1) if inside else {**NONE, "Q": 1, "UNK": 1}), bed
        result = bench([], [deletion], bed=bed)
        assert counts(result, "INDEL")["FP" if inside else "UNK"] == 1, bed


def test_no_calls_and_hom_ref_are_not_calls(bench):
    truth = [snp(300), snp(400)]
    query = [snp(300, "./."), snp(400, "0/0", "RefCall"), snp(500, "0/0"), snp(600, ".")]
    result = bench(truth, query)
    for filter_ in ("ALL", "PASS"):
        assert counts(result, "SNP", filter_) == {"T": 2, "TP": 0, "FN": 2, "Q": 0, "QTP": 0, "FP": 0, "UNK": 0}
    assert [e["reason"] for e in result.errors] == ["missing", "missing"]
    assert result.query_stats.no_call == 2 and result.query_stats.hom_ref == 2


def test_filtered_calls_count_in_all_only(bench):
    truth = [snp(300), (*HP_DEL_LEFT, "1/1")]
    query = [snp(300, "0/1", "LowQual"), (*HP_DEL_RIGHT, "1/1", "LowQual"), snp(700, "0/1", "LowQual")]
    result = bench(truth, query)
    assert counts(result, "SNP", "ALL") == {"T": 1, "TP": 1, "FN": 0, "Q": 2, "QTP": 1, "FP": 1, "UNK": 0}
    assert counts(result, "SNP", "PASS") == {"T": 1, "TP": 0, "FN": 1, "Q": 0, "QTP": 0, "FP": 0, "UNK": 0}
    assert counts(result, "INDEL", "ALL") == tp(1)
    assert counts(result, "INDEL", "PASS") == {"T": 1, "TP": 0, "FN": 1, "Q": 0, "QTP": 0, "FP": 0, "UNK": 0}
    assert errors(result) == [
        ("truth", "FN", HOMOPOLYMER + 1, "INDEL", "filtered", "PASS"),
        ("truth", "FN", 301, "SNP", "filtered", "PASS"),
        ("query", "FP", 701, "SNP", "not_in_truth", "ALL"),
    ]


def test_filtered_call_does_not_hide_a_pass_call(bench):
    # a filtered duplicate next to a PASS call: PASS still matches
    truth = [snp(300)]
    result = bench(truth, [snp(300), snp(300, "1/1", "LowQual")])
    assert counts(result, "SNP", "PASS") == tp(1)
    assert counts(result, "SNP", "ALL") == {"T": 1, "TP": 1, "FN": 0, "Q": 2, "QTP": 1, "FP": 1, "UNK": 0}


def test_fp_and_fn(bench):
    result = bench([snp(300), snp(900)], [snp(300), snp(1200, "1/1")])
    assert counts(result, "SNP") == {"T": 2, "TP": 1, "FN": 1, "Q": 2, "QTP": 1, "FP": 1, "UNK": 0}
    assert errors(result) == [
        ("truth", "FN", 901, "SNP", "missing", "ALL,PASS"),
        ("query", "FP", 1201, "SNP", "not_in_truth", "ALL,PASS"),
    ]
    row = result.row("SNP", "PASS")
    assert row["METRIC.Recall"] == row["METRIC.Precision"] == row["METRIC.F1_Score"] == 0.5


def test_tp_next_to_an_fp_in_one_cluster(bench):
    result = bench([snp(300)], [snp(300), snp(305)])
    assert counts(result, "SNP") == {"T": 1, "TP": 1, "FN": 0, "Q": 2, "QTP": 1, "FP": 1, "UNK": 0}
    assert [e["reason"] for e in result.errors] == ["not_in_truth"]


def test_undefined_metrics_are_nan(bench):
    result = bench([], [])
    row = result.row("INDEL", "PASS")
    assert row["TRUTH.TOTAL"] == row["QUERY.TOTAL"] == 0
    for metric in ("METRIC.Recall", "METRIC.Precision", "METRIC.F1_Score", "METRIC.Frac_NA"):
        assert math.isnan(row[metric])


def test_stratification_and_regions(bench):
    truth = [snp(300), snp(900), (*HP_DEL_LEFT, "0/1")]
    query = [snp(300), (*HP_DEL_RIGHT, "0/1"), snp(1200)]
    result = bench(truth, query, strata={"low": [(0, 500)], "high": [(800, 2000)]})
    assert result.subsets == ["*", "low", "high"]
    assert [(r["Subset"], r["Type"], r["Filter"]) for r in result.rows][:5] == [
        ("*", "INDEL", "ALL"), ("*", "INDEL", "PASS"), ("*", "SNP", "ALL"), ("*", "SNP", "PASS"),
        ("low", "INDEL", "ALL"),
    ]  # fmt: skip
    assert counts(result, "SNP", subset="low") == tp(1)
    assert counts(result, "INDEL", subset="low") == tp(1)
    assert counts(result, "SNP", subset="high") == {"T": 1, "TP": 0, "FN": 1, "Q": 1, "QTP": 0, "FP": 1, "UNK": 0}
    # --regions: only records overlapping chrB:1-500 (1-based) are compared at all
    result = bench(truth, query, regions=[f"{CONTIG}:1-500"])
    assert counts(result, "SNP") == tp(1) and counts(result, "INDEL") == tp(1)


# ------------------------------------------------------------------------------------------- files and CLI


def _cli(tmp_path: Path, fasta: Path, truth: Path, query: Path, bed: Path, *extra: str) -> int:
    return main([
        "benchmark", "--truth", str(truth), "--confident", str(bed), "--query", str(query), "--ref", str(fasta),
        "--out", str(tmp_path / "out"), *extra,
    ])  # fmt: skip


def test_cli_writes_hap_py_csv_json_and_errors(tmp_path, fasta):
    truth = write_vcf(tmp_path / "truth.vcf", [snp(300), snp(350, "1/1"), (*HP_DEL_LEFT, "0/1"), snp(900)])
    # the query is a plain, unindexed VCF
    query = write_vcf(tmp_path / "query.vcf", [snp(300), snp(350, "0/1"), (*HP_DEL_RIGHT, "0/1")], index=False)
    bed = tmp_path / "conf.bed"
    bed.write_text(f"{CONTIG}\t0\t{LENGTH}\n")
    strat = tmp_path / "hp.bed"
    strat.write_text(f"{CONTIG}\t90\t120\n")
    assert _cli(tmp_path, fasta, truth, query, bed, "--stratify", f"homopolymer={strat}") == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["errors.tsv", "summary.csv", "summary.json"]
    assert not list(tmp_path.glob("query.vcf.gz*"))  # the user's directory is left alone

    rows = list(csv.reader((out / "summary.csv").open()))
    assert rows[0] == ["Subset", *COLUMNS]
    assert [r[:3] for r in rows[1:5]] == [["*", "INDEL", "ALL"], ["*", "INDEL", "PASS"], ["*", "SNP", "ALL"],
                                          ["*", "SNP", "PASS"]]  # fmt: skip
    assert len(rows) == 9 and [r[0] for r in rows[5:]] == ["homopolymer"] * 4
    snp_pass = dict(zip(rows[0], rows[4]))
    assert {k: snp_pass[k] for k in COLUMNS[2:10]} == {
        "TRUTH.TOTAL": "3", "TRUTH.TP": "1", "TRUTH.FN": "2", "QUERY.TOTAL": "2", "QUERY.FP": "1", "QUERY.UNK": "0",
        "FP.gt": "1", "FP.al": "0",
    }  # fmt: skip
    assert snp_pass["METRIC.Recall"] == "0.333333" and snp_pass["METRIC.Precision"] == "0.500000"
    assert snp_pass["METRIC.F1_Score"] == "0.400000" and snp_pass["TRUTH.TOTAL.TiTv_ratio"] != ""
    indel_pass = dict(zip(rows[0], rows[2]))
    assert (indel_pass["TRUTH.TP"], indel_pass["METRIC.Recall"], indel_pass["TRUTH.TOTAL.TiTv_ratio"]) == (
        "1", "1.000000", "")  # fmt: skip

    document = json.loads((out / "summary.json").read_text())
    assert document["schema"] == "deepflows.benchmark"
    assert document["summary"][3]["QUERY.TP"] == 1 and document["summary"][3]["TRUTH.FN"] == 2
    assert document["summary"][0]["TRUTH.TOTAL.TiTv_ratio"] is None
    assert set(document["matching"]) == {"clusters", "exact", "haplotype", "unresolved"}
    assert document["matching"]["clusters"] == 4

    lines = (out / "errors.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ERROR_COLUMNS
    found = [dict(zip(ERROR_COLUMNS, line.split("\t"))) for line in lines[1:]]
    assert [(e["side"], e["decision"], e["pos"], e["genotype"], e["reason"]) for e in found] == [
        ("truth", "FN", "351", "1/1", "genotype_mismatch"),
        ("query", "FP", "351", "0/1", "genotype_mismatch"),
        ("truth", "FN", "901", "0/1", "missing"),
    ]
    assert found[0]["ref"] == REFERENCE[350] and found[0]["type"] == "SNP" and found[0]["filter_rows"] == "ALL,PASS"

    # a benchmark is never overwritten; same inputs, same bytes
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert _cli(tmp_path, fasta, truth, query, bed, "--stratify", f"homopolymer={strat}") == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    again = tmp_path / "again"
    again.mkdir()
    assert _cli(again, fasta, truth, query, bed, "--stratify", f"homopolymer={strat}") == 0
    second = {p.name: p.read_bytes() for p in (again / "out").iterdir()}
    command = {name: json.loads(files["summary.json"]).pop("command") for name, files in (("1", first), ("2", second))}
    assert command["1"] != command["2"]  # the output directory is named in the command, the rest is the same
    assert {k: v for k, v in second.items() if k != "summary.json"} == {k: v for k, v in first.items()
                                                                       if k != "summary.json"}  # fmt: skip
    assert ({k: v for k, v in json.loads(second["summary.json"]).items() if k != "command"}
            == {k: v for k, v in json.loads(first["summary.json"]).items() if k != "command"})  # fmt: skip


@pytest.mark.parametrize("form", ["plain", "bgzip-no-index", "gzip", "bcf-no-index"])
def test_query_formats(tmp_path, fasta, form):
    records = [snp(300), (*HP_DEL_RIGHT, "1/1")]
    truth = write_vcf(tmp_path / "truth.vcf", [snp(300), (*HP_DEL_LEFT, "1/1")])
    plain = write_vcf(tmp_path / "query.vcf", records, index=False)
    query = {
        "plain": lambda: plain,
        "bgzip-no-index": lambda: _bgzip(plain),
        "gzip": lambda: _gzip(plain),
        "bcf-no-index": lambda: _bcf(plain),
    }[form]()
    bed = tmp_path / "conf.bed"
    bed.write_text(f"{CONTIG}\t0\t{LENGTH}\n")
    result = compare(BenchmarkOptions(truth=truth, confident=bed, query=query, ref=fasta))
    assert counts(result, "SNP") == tp(1) and counts(result, "INDEL") == tp(1)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("query")) == sorted(
        {"plain": ["query.vcf"], "bgzip-no-index": ["query.vcf", "query.vcf.gz"], "gzip": ["query.vcf", "query.vcf.gz"],
         "bcf-no-index": ["query.bcf", "query.vcf"]}[form]
    )  # fmt: skip


def _bgzip(plain: Path) -> Path:
    out = plain.with_suffix(".vcf.gz")
    pysam.tabix_compress(str(plain), str(out))
    return out


def _gzip(plain: Path) -> Path:
    import gzip

    out = plain.with_suffix(".vcf.gz")
    out.write_bytes(gzip.compress(plain.read_bytes()))
    return out


def _bcf(plain: Path) -> Path:
    out = plain.with_suffix(".bcf")
    with pysam.VariantFile(str(plain)) as src, pysam.VariantFile(str(out), "wb", header=src.header) as dst:
        for record in src:
            dst.write(record)
    return out


def test_bad_inputs_exit_2_and_write_nothing(tmp_path, fasta, capsys):
    bed = tmp_path / "conf.bed"
    bed.write_text(f"{CONTIG}\t0\t{LENGTH}\n")
    truth = write_vcf(tmp_path / "truth.vcf", [snp(300)])
    wrong_ref = write_vcf(tmp_path / "wrong.vcf", [(300, other_base(REFERENCE[300]), ("A",), "0/1")])
    no_sample = write_vcf(tmp_path / "nosample.vcf", [snp(300)], sample=False)
    other_contig = tmp_path / "chr1.vcf"
    other_contig.write_text(write_vcf(tmp_path / "x.vcf", [snp(300)], index=False).read_text().replace(CONTIG, "chr1"))
    unsorted = tmp_path / "unsorted.vcf"
    text = write_vcf(tmp_path / "y.vcf", [snp(300), snp(200)], index=False).read_text().splitlines()
    unsorted.write_text("\n".join(text[:-2] + [text[-1], text[-2]]) + "\n")
    cases = {
        "does not match the reference": (truth, wrong_ref, bed),
        "no sample column": (truth, no_sample, bed),
        "no contig in common": (truth, other_contig, bed),
        "sorted": (truth, unsorted, bed),
        "VCF not found": (truth, tmp_path / "missing.vcf", bed),
        "confident BED not found": (truth, truth, tmp_path / "missing.bed"),
    }
    for expected, (t, q, b) in cases.items():
        assert _cli(tmp_path, fasta, t, q, b) == 2, expected
        message = capsys.readouterr().err.strip().splitlines()[-1]
        assert message.startswith("deepflows benchmark: error: ") and expected in message, message
        assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="used twice"):
        from deepflows.genomics.benchmark.cli import parse_stratify

        parse_stratify(["a=x.bed", "a=y.bed"])


# ------------------------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_deepvariant_golden_calls_against_giab(shared_data, tmp_path):
    """DeepVariant's own calls for NA12878 chr20:10,000,001-10,010,000 against the GIAB truth of its tests."""
    g = shared_data / "genomics"
    assert main([
        "benchmark",
        "--truth", str(g / "test_nist.b37_chr20_100kbp_at_10mb.vcf.gz"),
        "--confident", str(g / "test_nist.b37_chr20_100kbp_at_10mb.bed"),
        "--query", str(g / "deepvariant_golden" / "golden.postprocess_single_site_output.vcf"),  # plain VCF
        "--ref", str(g / "ucsc.hg19.chr20.unittest.fasta.gz"),
        "--regions", "chr20:10,000,001-10,010,000",
        "--out", str(tmp_path / "out"),
    ]) == 0  # fmt: skip
    rows = {(r["Type"], r["Filter"]): r for r in csv.DictReader((tmp_path / "out" / "summary.csv").open())}
    got = {key: tuple(int(rows[key][c]) for c in ("TRUTH.TP", "QUERY.FP", "TRUTH.FN")) for key in rows}
    assert got[("SNP", "PASS")] == (43, 0, 1)
    assert got[("INDEL", "PASS")] == (4, 0, 0)
    assert got[("SNP", "ALL")] == (43, 0, 1) and got[("INDEL", "ALL")] == (4, 0, 0)  # RefCalls are 0/0
    errors = (tmp_path / "out" / "errors.tsv").read_text().splitlines()[1:]
    assert [e.split("\t")[:2] + e.split("\t")[6:9] for e in errors] == [["chr20", "10001019", "truth", "FN", "missing"]]
