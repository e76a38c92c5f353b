"""`deepflows postprocess`: hand-written probabilities -> exact VCF records (GT, GQ, QUAL, PL, FILTER, a 1/2
site, AD/DP/VAF), a valid bgzipped + tabix-indexed file, and a round trip through `deepflows benchmark`."""

from __future__ import annotations

import csv
import gzip
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pysam
import pytest
from synthetic import random_reference

from deepflows.cli import main
from deepflows.errors import UserError
from deepflows.genomics.calling.call_variants import ProbsWriter, open_probs
from deepflows.genomics.calling.postprocess import (
    Site,
    call_site,
    genotype_probabilities,
    genotype_site,
    iter_sites,
    trim_suffix,
    vcf_genotypes,
)
from deepflows.genomics.io.vcf_writer import format_qual

# Reference order chr2 before chr10 (not the alphabetical order), so sorting by the reference shows.
CONTIGS = {"chr2": 400, "chr10": 400}
SHA = "ab" * 32


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("ref") / "ref.fa"
    return path, random_reference(path, CONTIGS, seed=3)


def other(base: str, k: int = 0) -> str:
    return [b for b in "ACGT" if b != base][k]


def sites(seq: dict[str, str]) -> list[tuple]:
    """(contig, start, ref, alts, depth, allele_depth, [(alt_indices, probs), ...]); chr10 first in the store."""
    a, b = seq["chr2"], seq["chr10"]
    return [
        # 1/2: two deletions at one site; min-merge over its three examples
        ("chr10", 60, b[60:63], [b[60], b[60] + b[62]], 30, "2,15,13",
         [("0", (0.01, 0.9, 0.09)), ("1", (0.02, 0.88, 0.10)), ("0,1", (0.005, 0.02, 0.975))]),
        # alt 1 ruled out by its own example (p0 0.95): a het call of alt 2, written as a biallelic record
        ("chr10", 120, b[120], [other(b[120], 0), other(b[120], 1)], 23, "10,1,12",
         [("0", (0.95, 0.04, 0.01)), ("1", (0.01, 0.97, 0.02)), ("0,1", (0.01, 0.95, 0.04))]),
        # 0/2 over two deletions: alt 1 dropped, then REF/ALT trimmed (XYZ/XZ -> XY/X)
        ("chr10", 200, b[200:203], [b[200], b[200] + b[202]], 28, "3,5,20",
         [("0", (0.5, 0.3, 0.2)), ("1", (0.02, 0.95, 0.03)), ("0,1", (0.02, 0.9, 0.08))]),
        # certain hom-alt: GQ, QUAL and PL capped at 100
        ("chr10", 250, b[250], [other(b[250])], 40, "0,40", [("0", (0.0, 0.0, 1.0))]),
        ("chr2", 50, a[50], [other(a[50])], 30, "14,16", [("0", (0.01, 0.95, 0.04))]),  # het SNP
        ("chr2", 100, a[100:103], [a[100]], 21, "1,20", [("0", (0.001, 0.009, 0.99))]),  # hom deletion
        ("chr2", 150, a[150], [other(a[150])], 25, "20,5", [("0", (0.9, 0.08, 0.02))]),  # RefCall
        ("chr2", 200, a[200], [other(a[200])], 20, "11,9", [("0", (0.45, 0.5, 0.05))]),  # QUAL 3.5
    ]  # fmt: skip


def expected_lines(seq: dict[str, str], low_qual: bool) -> list[str]:
    """Worked by hand from the module docstring of postprocess (see test_worked_multiallelic_example)."""
    a, b = seq["chr2"], seq["chr10"]
    fmt = "GT:GQ:DP:AD:VAF:PL"
    return [
        f"chr2\t51\t.\t{a[50]}\t{other(a[50])}\t20\tPASS\t.\t{fmt}\t0/1:13:30:14,16:0.533333:19,0,13",
        f"chr2\t101\t.\t{a[100:103]}\t{a[100]}\t30\tPASS\t.\t{fmt}\t1/1:20:21:1,20:0.952381:29,20,0",
        f"chr2\t151\t.\t{a[150]}\t{other(a[150])}\t0.5\tRefCall\t.\t{fmt}\t0/0:10:25:20,5:0.2:0,10,16",
        (
            f"chr2\t201\t.\t{a[200]}\t{other(a[200])}\t3.5\t{'LowQual' if low_qual else 'PASS'}\t.\t{fmt}"
            f"\t0/1:3:20:11,9:0.45:0,0,10"
        ),
        (
            f"chr10\t61\t.\t{b[60:63]}\t{b[60]},{b[60] + b[62]}\t22.8\tPASS\t.\t{fmt}"
            f"\t1/2:12:30:2,15,13:0.5,0.433333:22,16,16,19,0,19"
        ),
        f"chr10\t121\t.\t{b[120]}\t{other(b[120], 1)}\t20.2\tPASS\t.\t{fmt}\t0/1:11:23:10,12:0.521739:19,0,16",
        f"chr10\t201\t.\t{b[200:202]}\t{b[200]}\t15.3\tPASS\t.\t{fmt}\t0/1:6:28:3,20:0.714286:13,0,12",
        f"chr10\t251\t.\t{b[250]}\t{other(b[250])}\t100\tPASS\t.\t{fmt}\t1/1:100:40:0,40:1:100,100,0",
    ]


PROBS_ATTRS = {
    "sample": "HG-test", "model": {"name": "tiny-model", "sha256": SHA},
    "command": "deepflows call-variants --examples x.zarr --model m --out p.zarr",
}  # fmt: skip


def write_probs(path: Path, rows: list[tuple], attrs: dict | None = None, chunk: int = 3) -> Path:
    examples = [(c, s, r, ",".join(alts), d, ad, ai, p) for c, s, r, alts, d, ad, ex in rows for ai, p in ex]
    attrs = attrs if attrs is not None else PROBS_ATTRS
    with ProbsWriter(path, len(examples), attrs, chunk=chunk) as writer:
        writer.add_meta({
            "contig": [e[0] for e in examples], "start": [e[1] for e in examples],
            "end": [e[1] + len(e[2]) for e in examples], "ref": [e[2] for e in examples],
            "alts": [e[3] for e in examples], "depth": [e[4] for e in examples],
            "allele_depth": [e[5] for e in examples], "alt_indices": [e[6] for e in examples],
        })  # fmt: skip
        writer.add_probs(np.array([e[7] for e in examples], dtype=np.float32))
        writer.commit()
    return path


def body(vcf: Path) -> list[str]:
    with gzip.open(vcf, "rt") as handle:
        return [line.rstrip("\n") for line in handle if not line.startswith("#")]


def postprocess(probs: Path, ref: Path, out: Path, *extra: str) -> int:
    return main(["postprocess", "--probs", str(probs), "--ref", str(ref), "--out", str(out), *extra])


def test_exact_records_and_header(reference, tmp_path):
    ref, seq = reference
    probs = write_probs(tmp_path / "probs.zarr", sites(seq))
    out = tmp_path / "calls.vcf.gz"
    assert postprocess(probs, ref, out, "--qual-filter", "5") == 0
    assert body(out) == expected_lines(seq, low_qual=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calls.vcf.gz", "calls.vcf.gz.tbi", "probs.zarr"]

    with gzip.open(out, "rt") as handle:
        header = [line.rstrip("\n") for line in handle if line.startswith("#")]
    assert header[0] == "##fileformat=VCFv4.2"
    assert "##contig=<ID=chr2,length=400>" in header and "##contig=<ID=chr10,length=400>" in header
    assert header.index("##contig=<ID=chr2,length=400>") < header.index("##contig=<ID=chr10,length=400>")
    command = f"deepflows postprocess --probs {probs} --ref {ref} --out {out} --qual-filter 5"
    for line in ("##deepflows_model=tiny-model", f"##deepflows_model_sha256={SHA}", f"##deepflows_command={command}"):
        assert line in header
    assert any(h.startswith("##deepflows_version=") for h in header)
    software = next(h for h in header if h.startswith("##deepflows_software="))
    assert re.fullmatch(r"##deepflows_software=python=\S+( \w+=\S+)+", software) and " jax=" in software

    # the provenance table shows the header's deepflows lines, in order, then --extra rows
    table = tmp_path / "provenance.tsv"
    assert main(["provenance", "--vcf", str(out), "--out", str(table), "--extra", "snakemake=9.0"]) == 0
    rows = [line.split("\t", 1) for line in table.read_text().splitlines()]
    expected = [h[2:].split("=", 1) for h in header if h.startswith(("##deepflows_", "##source=", "##reference="))]
    assert rows == [["key", "value"], *expected, ["snakemake", "9.0"]]
    # a malformed --extra is refused with one line and no table
    bad_table = tmp_path / "bad.tsv"
    assert main(["provenance", "--vcf", str(out), "--out", str(bad_table), "--extra", "snakemake"]) != 0
    assert not bad_table.exists()
    for key in ("FILTER=<ID=RefCall", "FILTER=<ID=LowQual", "FILTER=<ID=PASS", "INFO=<ID=END", "FORMAT=<ID=GT",
                "FORMAT=<ID=GQ", "FORMAT=<ID=DP", "FORMAT=<ID=AD", "FORMAT=<ID=VAF", "FORMAT=<ID=PL"):  # fmt: skip
        assert any(h.startswith(f"##{key},") for h in header), key
    assert header[-1].split("\t")[9] == "HG-test"

    # the default --qual-filter 1 lets the QUAL 3.5 call pass; --sample renames the column
    out2 = tmp_path / "default.vcf.gz"
    assert postprocess(probs, ref, out2, "--sample", "NA24385") == 0
    assert body(out2) == expected_lines(seq, low_qual=False)


def test_same_inputs_same_bytes(reference, tmp_path, monkeypatch):
    """No dates or machine-dependent fields: the same command gives the same VCF and index, byte for byte."""
    ref, seq = reference
    probs = write_probs(tmp_path / "probs.zarr", sites(seq))
    outputs = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        monkeypatch.chdir(tmp_path / run)
        assert postprocess(probs, ref, Path("calls.vcf.gz")) == 0
        outputs.append([(tmp_path / run / name).read_bytes() for name in ("calls.vcf.gz", "calls.vcf.gz.tbi")])
    assert outputs[0] == outputs[1]


def test_bgzipped_indexed_and_readable(reference, tmp_path):
    ref, seq = reference
    out = tmp_path / "calls.vcf.gz"
    assert postprocess(write_probs(tmp_path / "probs.zarr", sites(seq)), ref, out) == 0
    with open(out, "rb") as handle:
        assert handle.read(4) == b"\x1f\x8b\x08\x04"  # BGZF (gzip with the extra field)
    with pysam.VariantFile(str(out)) as vcf:
        records = list(vcf.fetch("chr10", 100, 260))  # needs the tabix index
        assert [r.pos for r in records] == [121, 201, 251]
        het_alt = next(vcf.fetch("chr10", 60, 61))
        assert het_alt.samples[0]["GT"] == (1, 2) and het_alt.samples[0]["PL"] == (22, 16, 16, 19, 0, 19)
        assert het_alt.samples[0]["AD"] == (2, 15, 13) and het_alt.qual == pytest.approx(22.8)
    if shutil.which("bcftools"):
        result = subprocess.run(["bcftools", "view", "-H", "-f", "PASS", str(out)], capture_output=True, text=True,
                                check=True)  # fmt: skip
        assert len(result.stdout.splitlines()) == 7 and not result.stderr
        stats = subprocess.run(["bcftools", "view", "-H", "-r", "chr10:61", str(out)], capture_output=True, text=True,
                               check=True)  # fmt: skip
        assert stats.stdout.split("\t")[1] == "61"


def test_round_trip_through_benchmark(reference, tmp_path):
    """Every variant call matches a truth set with the same variants (written differently where they can be)."""
    ref, seq = reference
    out = tmp_path / "calls.vcf.gz"
    assert postprocess(write_probs(tmp_path / "probs.zarr", sites(seq)), ref, out) == 0
    a, b = seq["chr2"], seq["chr10"]
    truth_records = [  # (contig, pos, ref, alt, gt); the 0/2 deletion untrimmed, the 1/2 site as written
        ("chr2", 51, a[50], other(a[50]), "0/1"),
        ("chr2", 101, a[100:103], a[100], "1/1"),
        ("chr2", 201, a[200], other(a[200]), "0/1"),
        ("chr10", 61, b[60:63], f"{b[60]},{b[60] + b[62]}", "1/2"),
        ("chr10", 121, b[120], other(b[120], 1), "0/1"),
        ("chr10", 201, b[200:203], b[200] + b[202], "0/1"),
        ("chr10", 251, b[250], other(b[250]), "1/1"),
    ]
    lines = ["##fileformat=VCFv4.2", *(f"##contig=<ID={c},length={n}>" for c, n in CONTIGS.items()),
             '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ttruth"]  # fmt: skip
    lines += [f"{c}\t{p}\t.\t{r}\t{alt}\t50\tPASS\t.\tGT\t{gt}" for c, p, r, alt, gt in truth_records]
    plain = tmp_path / "truth.vcf"
    plain.write_text("\n".join(lines) + "\n")
    truth = Path(pysam.tabix_index(str(plain), preset="vcf", force=True))
    bed = tmp_path / "confident.bed"
    bed.write_text("".join(f"{c}\t0\t{n}\n" for c, n in CONTIGS.items()))
    assert main(["benchmark", "--truth", str(truth), "--confident", str(bed), "--query", str(out),
                 "--ref", str(ref), "--out", str(tmp_path / "bench")]) == 0  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "bench" / "summary.csv").open()))
    assert {(r["Type"], r["Filter"]) for r in rows} == {(t, f) for t in ("SNP", "INDEL") for f in ("ALL", "PASS")}
    for row in rows:
        assert row["TRUTH.TP"] == row["TRUTH.TOTAL"] != "0" and row["TRUTH.FN"] == "0", row
        assert row["QUERY.FP"] == "0" and row["METRIC.F1_Score"] == "1.000000", row
    totals = {(r["Type"], r["Filter"]): int(r["TRUTH.TOTAL"]) for r in rows}
    assert totals[("SNP", "PASS")] == 4 and totals[("INDEL", "PASS")] == 4  # the 1/2 site counts two alleles


def test_worked_multiallelic_example():
    """The docstring's formula on the 1/2 site of the records above."""
    examples = [((0,), np.array([0.01, 0.9, 0.09])), ((1,), np.array([0.02, 0.88, 0.10])),
                ((0, 1), np.array([0.005, 0.02, 0.975]))]  # fmt: skip
    genotypes, probs = genotype_probabilities(2, examples)
    assert genotypes == vcf_genotypes([0, 1, 2]) == [(0, 0), (0, 1), (1, 1), (0, 2), (1, 2), (2, 2)]
    # min over the three examples of p[copies of the example's alts in the genotype]:
    # (0,0) min(.01,.02,.005); (0,1) min(.9,.02,.02); (1,1) min(.09,.02,.975); (0,2) min(.01,.88,.02);
    # (1,2) min(.9,.88,.975); (2,2) min(.01,.10,.975); then normalised by their sum .945
    assert probs * 0.945 == pytest.approx([0.005, 0.02, 0.02, 0.01, 0.88, 0.01])
    # with alt 1 removed, only examples without it count: the single-alt example of alt 2
    genotypes, probs = genotype_probabilities(2, examples, removed={1})
    assert genotypes == [(0, 0), (0, 2), (2, 2)] and probs == pytest.approx([0.02, 0.88, 0.10])


def test_single_alt_examples_speak_for_every_genotype():
    """Each single-alt example says "one copy of my alt"; an unsure pair example (0.56 one copy of either,
    0.44 two) must not turn that into 0/1 or 0/2: under 0/1 the example of alt 2 should have shown no copy
    (p0 0.003), so the het-alt wins. (A CA-repeat insertion + deletion seen with these figures.)"""
    examples = [((0,), np.array([0.002, 0.997, 0.001])), ((1,), np.array([0.003, 0.997, 0.0])),
                ((0, 1), np.array([0.0, 0.557, 0.443]))]  # fmt: skip
    genotypes, probs = genotype_probabilities(2, examples)
    assert genotypes[int(np.argmax(probs))] == (1, 2) and probs.max() > 0.98


def test_pruning_is_deepvariants_option():
    """--multi-allelic-qual-filter 1 drops an alt whose own QUAL is below 1 before genotyping (DeepVariant's
    default); by default no alt is dropped, and the one its example rules out still loses."""
    examples = [((0,), np.array([0.95, 0.04, 0.01])), ((1,), np.array([0.01, 0.97, 0.02])),
                ((0, 1), np.array([0.01, 0.95, 0.04]))]  # fmt: skip
    site = Site("chr1", 9, "A", ("C", "G"), 23, (10, 1, 12), examples)
    pruned, kept = genotype_site(site, 1.0), genotype_site(site)
    assert pruned.removed == {1} and pruned.genotypes == [(0, 0), (0, 2), (2, 2)]
    assert kept.removed == set() and kept.genotypes[kept.best] == pruned.genotypes[pruned.best] == (0, 2)
    # the same call, with less confidence when alt 1's pair example is heard too
    assert kept.probs[kept.best] == pytest.approx(0.95 / 1.04)
    assert kept.probs[kept.best] < pruned.probs[pruned.best]


def test_three_alts_pick_the_pair():
    """A site with three alts has 3 + 3 examples; a confident pair example makes the 2/3 call."""
    confident_23 = {(0,): [0.3, 0.6, 0.1], (1,): [0.05, 0.9, 0.05], (2,): [0.05, 0.9, 0.05],
                    (0, 1): [0.05, 0.9, 0.05], (0, 2): [0.05, 0.9, 0.05], (1, 2): [0.01, 0.01, 0.98]}  # fmt: skip
    site = Site("chr1", 9, "A", ("C", "G", "T"), 30, (2, 3, 12, 13),
                [(k, np.array(v)) for k, v in confident_23.items()])  # fmt: skip
    record = call_site(site)
    assert (record.alts, record.genotype, record.allele_depth, record.filter) == (
        ("G", "T"),
        (1, 2),
        (2, 12, 13),
        "PASS",
    )
    assert len(record.pl) == 6 and record.pl[4] == 0


def test_quality_formatting_and_trimming():
    assert [format_qual(q) for q in (38.0, 37.6, 0.0, -0.0, 100.0, 0.04)] == ["38", "37.6", "0", "0", "100", "0"]
    assert trim_suffix("GTT", ["GT"]) == ("GT", ["G"])
    assert trim_suffix("GTT", ["G", "GT"]) == ("GTT", ["G", "GT"])
    assert trim_suffix("CA", ["TA"]) == ("C", ["T"])


def test_overlapping_calls_fit_on_two_haplotypes(reference, tmp_path):
    """A het 17 bp deletion over a 3 bp deletion that alone would be 1/1: the latter is written 0/1 with the GQ
    of 0/1 (PL and QUAL unchanged); a hom-alt SNP after the deletion's span is not touched."""
    ref, seq = reference
    a = seq["chr2"]
    rows = [
        ("chr2", 300, a[300:318], [a[300]], 24, "10,14", [("0", (0.001, 0.99, 0.009))]),
        ("chr2", 312, a[312:316], [a[312]], 10, "1,9", [("0", (0.001, 0.2, 0.799))]),
        ("chr2", 318, a[318], [other(a[318])], 20, "0,20", [("0", (0.0, 0.01, 0.99))]),
    ]
    out = tmp_path / "calls.vcf.gz"
    assert postprocess(write_probs(tmp_path / "probs.zarr", rows), ref, out) == 0
    fields = [line.split("\t") for line in body(out)]
    assert [f[1] for f in fields] == ["301", "313", "319"]
    assert [f[9].split(":")[:2] for f in fields] == [["0/1", "20"], ["0/1", "1"], ["1/1", "20"]]
    assert fields[1][5] == "30" and fields[1][9].endswith(":29,6,0")


def test_sites_spanning_read_blocks(reference, tmp_path):
    _, seq = reference
    group = open_probs(write_probs(tmp_path / "probs.zarr", sites(seq)))
    whole = [(s.contig, s.start, len(s.examples)) for s in iter_sites(group, "p")]
    assert [(s.contig, s.start, len(s.examples)) for s in iter_sites(group, "p", rows=2)] == whole
    assert whole[0] == ("chr10", 60, 3) and len(whole) == 8


def test_bad_inputs_one_line_and_no_output(reference, tmp_path, capsys):
    ref, seq = reference
    good = write_probs(tmp_path / "good.zarr", sites(seq))
    rows = sites(seq)
    incomplete = write_probs(tmp_path / "incomplete.zarr", [(*rows[0][:6], rows[0][6][:2]), *rows[1:]])
    mismatch = write_probs(tmp_path / "mismatch.zarr", [("chr2", 50, other(seq["chr2"][50]), ["A"], 9, "4,5",
                                                          [("0", (0.1, 0.8, 0.1))])])  # fmt: skip
    other_contig = write_probs(tmp_path / "contig.zarr", [("chrX", 5, "A", ["C"], 9, "4,5", [("0", (0.1, 0.8, 0.1))])])
    lacking = write_probs(tmp_path / "lacking.zarr", rows)
    shutil.rmtree(lacking / "allele_depth")
    other_ref = tmp_path / "other.fa"
    random_reference(other_ref, {"chr1": 100})
    (tmp_path / "exists.vcf.gz").write_text("x")
    cases = {
        "probs store not found": (tmp_path / "none.zarr", ref, "out.vcf.gz"),
        "array allele_depth is missing": (lacking, ref, "out.vcf.gz"),
        "needs 0 1 0,1": (incomplete, ref, "out.vcf.gz"),
        "does not match reference": (mismatch, ref, "out.vcf.gz"),
        "contig(s) chrX not in reference": (other_contig, ref, "out.vcf.gz"),
        "contig(s) chr10, chr2 not in reference": (good, other_ref, "out.vcf.gz"),
        "reference FASTA not found": (good, tmp_path / "none.fa", "out.vcf.gz"),
        "already exists": (good, ref, "exists.vcf.gz"),
        "name it *.vcf.gz": (good, ref, "out.vcf"),
    }
    for expected, (probs, fasta, name) in cases.items():
        assert postprocess(probs, fasta, tmp_path / name) == 2, expected
        message = capsys.readouterr().err.strip().splitlines()[-1]
        assert message.startswith("deepflows postprocess: error: ") and expected in message, message
        assert not list(tmp_path.glob("out.vcf*")) and not list(tmp_path.glob(".out*")), expected
    with pytest.raises(UserError, match="incomplete"):
        import zarr

        zarr.open_group(str(good), mode="r+").attrs["complete"] = False
        open_probs(good)


def test_provenance_pairs():
    from deepflows.errors import UserError
    from deepflows.genomics.calling.postprocess import parse_provenance

    assert parse_provenance(["config_sha256=ab12", "run=x=y"]) == {"deepflows_config_sha256": "ab12", "deepflows_run": "x=y"}
    for bad in ("novalue", "bad key=1", "key="):
        with pytest.raises(UserError, match="expected KEY=VALUE"):
            parse_provenance([bad])


def test_provenance_table_refuses_foreign_and_unreadable_vcfs(tmp_path, capsys):
    foreign = tmp_path / "bcftools.vcf"
    foreign.write_text("##fileformat=VCFv4.2\n##source=bcftools\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
    truncated = tmp_path / "cut.vcf.gz"
    truncated.write_bytes(gzip.compress(b"##fileformat=VCFv4.2\n##deepflows_version=0.1\n" * 50)[:40])
    for vcf, expected in ((foreign, "no ##deepflows_ header lines"), (truncated, "line 2: cannot be read as text"),
                          (tmp_path / "none.vcf.gz", "VCF not found")):  # fmt: skip
        assert main(["provenance", "--vcf", str(vcf), "--out", str(tmp_path / "p.tsv")]) == 2
        message = capsys.readouterr().err.strip().splitlines()[-1]
        assert message.startswith(f"deepflows provenance: error: {vcf}: {expected}"), message
        assert not list(tmp_path.glob("p.tsv*"))
