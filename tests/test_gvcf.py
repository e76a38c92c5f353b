"""gVCF: the reference-confidence model and its blocks (make_examples side), and postprocess's gVCF: records with
<*>, blocks cut around them, a valid bgzipped + indexed file, the VCF unchanged, bad blocks files refused."""

from __future__ import annotations

import gzip
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pysam
import pytest
from synthetic import random_reference
from test_postprocess import CONTIGS, PROBS_ATTRS, body, expected_lines, sites, write_probs

from deepflows.cli import main
from deepflows.genomics.calling.gvcf_blocks import (
    Block,
    Blocks,
    BlocksFile,
    BlockWriter,
    merge_blocks,
    position_blocks,
    reference_confidence,
)
from deepflows.genomics.calling.postprocess import postprocess as run_postprocess

# ----------------------------------------------------------------------------------------------- the model


def test_binomial_gq_and_pl_worked_by_hand():
    """n reads, r of them reference, p = 0.001: log10 L(hom-ref) = r log10(0.999) + (n - r) log10(0.001), L(het) =
    0.5^n, L(hom-alt) = 0.001^r 0.999^(n - r). The three sites are DeepVariant's golden gVCF's (same PL and GQ)."""
    gq, pl = reference_confidence(np.array([45, 25, 39, 0, 1]), np.array([45, 24, 35, 0, 1]))
    # 45/45: PL het = floor(10 (45 log10 2 + 45 log10 0.999)) = floor(135.27); hom-alt floor(1350 - 0.196)
    # GQ = phred(1 - P(hom-ref)) ~ 135.27, capped at 50
    assert pl[0].tolist() == [0, 135, 1349] and gq[0] == 50
    # 24/25: log10 L = -3.0104 (hom-ref), -7.5257 (het), -72.0004 (hom-alt): PL 0, 45, 689;
    # 1 - P(hom-ref) = (10^-7.5257 + 10^-72) / (10^-3.0104 + ...) = 10^-4.515: GQ 45
    assert pl[1].tolist() == [0, 45, 689] and gq[1] == 45
    # 35/39: het is the most likely (PL 2.75 -> 2 for hom-ref); P(hom-ref) = 10^-0.275 / (1 + 10^-0.275) = 0.347,
    # GQ = floor(phred(0.653)) = floor(1.85) = 1
    assert pl[2].tolist() == [2, 0, 932] and gq[2] == 1
    assert pl[3].tolist() == [0, 0, 0] and gq[3] == 0  # no reads, no confidence
    # 1/1: P(hom-ref) = 0.999 / (0.999 + 0.5 + 0.001) = 0.666; GQ floor(4.77) = 4; PL floor(10 log10(0.999/0.5)) = 3
    assert pl[4].tolist() == [0, 3, 29] and gq[4] == math.floor(-10 * math.log10(1 - 0.999 / 1.5))


def _blocks(*rows) -> Blocks:
    """Blocks from (start, end, gq, min_dp, pl) rows."""
    start, end, gq, min_dp, pl = zip(*rows)
    return Blocks(np.array(start), np.array(end), np.array(gq), np.array(min_dp), np.array(pl))


def _rows(blocks: Blocks) -> list[tuple]:
    return [(s, e, g, d, tuple(p)) for s, e, g, d, p in zip(blocks.start.tolist(), blocks.end.tolist(),
                                                              blocks.gq.tolist(), blocks.min_dp.tolist(),
                                                              blocks.pl.tolist())]  # fmt: skip


def test_merging_by_gq_bin_keeps_min_dp_and_the_least_gq():
    ok = (0, 30, 300)
    positions = _blocks(
        (10, 11, 50, 40, ok), (11, 12, 50, 22, ok),  # bin 10
        (12, 13, 47, 30, (0, 47, 470)), (13, 14, 45, 35, (0, 45, 450)), (14, 15, 45, 31, (0, 46, 460)),  # bin 9
        (15, 16, 50, 50, ok),  # bin 10 again: a new block
        (17, 18, 50, 50, ok),  # not adjacent (16 left out, e.g. a candidate): a new block
        (18, 19, 2, 9, (2, 0, 200)), (19, 20, 3, 9, (0, 3, 90)),  # bin 0, but ./. then 0/0: two blocks
        (20, 21, 0, 0, (0, 0, 0)), (21, 22, 0, 0, (0, 0, 0)),  # no reads: one ./. block
    )  # fmt: skip
    merged = _rows(merge_blocks(positions, gq_binsize=5))
    assert merged == [
        (10, 12, 50, 22, ok),
        (12, 15, 45, 30, (0, 45, 450)),  # least GQ 45 first at 13: its PL; MIN_DP over all three
        (15, 16, 50, 50, ok),
        (17, 18, 50, 50, ok),
        (18, 19, 2, 9, (2, 0, 200)),
        (19, 20, 3, 9, (0, 3, 90)),
        (20, 22, 0, 0, (0, 0, 0)),
    ]
    assert _rows(merge_blocks(positions, gq_binsize=100))[:2] == [(10, 16, 45, 22, (0, 45, 450)), (17, 18, 50, 50, ok)]


def test_candidate_positions_are_left_out():
    depth, ref = np.array([0, 0, 30, 30, 30, 30]), np.array([0, 0, 30, 15, 30, 30])
    blocks = position_blocks(100, depth, ref, excluded=np.array([False, False, False, True, False, False]))
    assert blocks.start.tolist() == [100, 101, 102, 104, 105]
    assert _rows(merge_blocks(blocks, 5)) == [(100, 102, 0, 0, (0, 0, 0)), (102, 103, 50, 30, (0, 90, 899)),
                                              (104, 106, 50, 30, (0, 90, 899))]  # fmt: skip


def test_writer_merges_across_windows_but_not_contigs(tmp_path):
    out = tmp_path / "b.tsv.gz"
    none = np.zeros(4, dtype=bool)
    with BlockWriter(out, [("chr2", 400), ("chr10", 400)], gq_binsize=5) as writer:
        writer.add("chr2", 0, np.full(4, 30), np.full(4, 30), none)
        writer.add("chr2", 4, np.array([30, 20, 0, 0]), np.array([30, 20, 0, 0]), none)
        writer.add("chr10", 8, np.full(4, 30), np.full(4, 30), none)  # same bin, other contig
        writer.commit()
    assert [p.name for p in tmp_path.iterdir()] == ["b.tsv.gz"]
    with gzip.open(out, "rt") as handle:
        text = handle.read().splitlines()
    assert text[:7] == ["##deepflows_gvcf_blocks=1", "##p_error=0.001", "##max_gq=50", "##gq_binsize=5",
                        "##contig=<ID=chr2,length=400>", "##contig=<ID=chr10,length=400>",
                        "#contig\tstart\tend\tgq\tmin_dp\tpl"]  # fmt: skip
    assert text[7:] == ["chr2\t0\t6\t50\t20\t0,90,899", "chr2\t6\t8\t0\t0\t0,0,0", "chr10\t8\t12\t50\t30\t0,90,899"]
    assert list(BlocksFile(out, dict(CONTIGS), "ref.fa"))[1] == Block("chr2", 6, 8, 0, 0, (0, 0, 0))
    with pytest.raises(RuntimeError), BlockWriter(tmp_path / "c.tsv.gz", [("chr2", 400)], 5) as writer:
        writer.add("chr2", 0, np.full(4, 30), np.full(4, 30), none)
        raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["b.tsv.gz"]  # nothing left of the interrupted file


# --------------------------------------------------------------------------------------- postprocess's gVCF


RUN = "5f0c-a-run-of-two-shards"


def write_blocks(path: Path, rows: list[tuple], contigs: dict[str, int] = CONTIGS, first: str | None = None,
                 shard: str | None = "1/2", run: str = RUN) -> Path:  # fmt: skip
    """A blocks file as make-examples --gvcf writes it, from (contig, start, end, gq, min_dp, pl) rows, for
    shard `shard` of the run `run` (no shard: as an older deepflows wrote them, without either)."""
    identity = [f"##deepflows_shard={shard}", f"##deepflows_run={run}"] if shard else []
    lines = [first or "##deepflows_gvcf_blocks=1", "##p_error=0.001", "##max_gq=50", "##gq_binsize=5", *identity,
             *(f"##contig=<ID={c},length={n}>" for c, n in contigs.items()),
             "#contig\tstart\tend\tgq\tmin_dp\tpl"]  # fmt: skip
    lines += ["\t".join(map(str, row)) for row in rows]
    with pysam.BGZFile(str(path), "wb") as handle:
        handle.write(("\n".join(lines) + "\n").encode())
    return path


SHARD_0 = [("chr2", 0, 400, 50, 30, "0,90,899"), ("chr10", 0, 100, 0, 0, "0,0,0")]
SHARD_1 = [("chr10", 100, 300, 20, 8, "0,20,200")]  # chr10:301-400 was not scanned


def non_ref(line: str) -> str:
    """A VCF record line as the gVCF writes it: <*> last, AD and VAF 0 for it, PL 990 for its genotypes."""
    fields = line.split("\t")
    n_alleles = fields[4].count(",") + 3
    gt, gq, dp, ad, vaf, pl = fields[9].split(":")
    fields[4] += ",<*>"
    fields[9] = ":".join([gt, gq, dp, f"{ad},0", f"{vaf},0", pl + ",990" * n_alleles])
    return "\t".join(fields)


def block(contig: str, pos: int, end: int, ref: str, sample: str) -> str:
    return f"{contig}\t{pos}\t.\t{ref}\t<*>\t0\t.\tEND={end}\tGT:GQ:MIN_DP:PL\t{sample}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """test_postprocess's reference: its calls fit it."""
    path = tmp_path_factory.mktemp("ref") / "ref.fa"
    return path, random_reference(path, CONTIGS, seed=3)


def probs_of_run(path: Path, rows: list[tuple]) -> Path:
    """A probs store as call-variants writes it for the examples of RUN (two shards)."""
    return write_probs(path, rows, {**PROBS_ATTRS, "run": RUN, "shard_count": 2})


@pytest.fixture()
def gvcf_inputs(reference, tmp_path):
    _, seq = reference
    probs = probs_of_run(tmp_path / "probs.zarr", sites(seq))
    return probs, [write_blocks(tmp_path / "b0.tsv.gz", SHARD_0, shard="0/2"), write_blocks(tmp_path / "b1.tsv.gz",
                                                                                              SHARD_1)]


def gvcf_postprocess(probs, ref, out, blocks, gvcf_out, *extra) -> int:
    return main(["postprocess", "--probs", str(probs), "--ref", str(ref), "--out", str(out), "--gvcf-blocks",
                 *map(str, blocks), "--gvcf-out", str(gvcf_out), *extra])  # fmt: skip


def test_gvcf_records_and_blocks_cut_around_them(reference, gvcf_inputs, tmp_path):
    ref, seq = reference
    a, b = seq["chr2"], seq["chr10"]
    probs, blocks = gvcf_inputs
    assert gvcf_postprocess(probs, ref, tmp_path / "calls.vcf.gz", blocks[::-1], tmp_path / "calls.g.vcf.gz") == 0
    calls = [non_ref(line) for line in expected_lines(seq, low_qual=False)]
    hom_ref, no_reads, chr10 = "0/0:50:30:0,90,899", "./.:0:0:0,0,0", "0/0:20:8:0,20,200"
    assert body(tmp_path / "calls.g.vcf.gz") == [
        block("chr2", 1, 50, a[0], hom_ref), calls[0],  # SNP at 51
        block("chr2", 52, 100, a[51], hom_ref), calls[1],  # the deletion at 101 spans 101-103
        block("chr2", 104, 150, a[103], hom_ref), calls[2],  # RefCall at 151: a record too
        block("chr2", 152, 200, a[151], hom_ref), calls[3],
        block("chr2", 202, 400, a[201], hom_ref),
        block("chr10", 1, 60, b[0], no_reads), calls[4],  # 1/2 over 61-63
        block("chr10", 64, 100, b[63], no_reads),
        block("chr10", 101, 120, b[100], chr10), calls[5],  # the second shard's block, cut three times
        block("chr10", 122, 200, b[121], chr10), calls[6],  # REF trimmed to 201-202
        block("chr10", 203, 250, b[202], chr10), calls[7],
        block("chr10", 252, 300, b[251], chr10),
    ]  # fmt: skip
    assert calls[4].endswith("\t1/2:12:30:2,15,13,0:0.5,0.433333,0:22,16,16,19,0,19,990,990,990,990")
    with gzip.open(tmp_path / "calls.g.vcf.gz", "rt") as handle:
        header = [line.rstrip("\n") for line in handle if line.startswith("##")]
    for line in ('##ALT=<ID=*,', '##INFO=<ID=END,', '##FORMAT=<ID=MIN_DP,', "##deepflows_gvcf_gq_binsize=5",
                 "##deepflows_gvcf_p_error=0.001", "##deepflows_gvcf_max_gq=50"):  # fmt: skip
        assert any(h.startswith(line) for h in header), line


def test_adjacent_blocks_of_two_shards_join(reference, tmp_path):
    """chr2 scanned by two shards, cut at 200: the blocks join as one shard would have made them (same GQ bin
    and GT: the least GQ, its PL, the least MIN_DP); chr10's do not (other GQ bins, other GT)."""
    ref, seq = reference
    probs = probs_of_run(tmp_path / "probs.zarr", [s for s in sites(seq) if s[0] == "chr2"][:1])  # the SNP at 51
    shard_0 = [("chr2", 0, 200, 47, 30, "0,90,899"), ("chr10", 0, 100, 0, 0, "0,0,0")]
    shard_1 = [("chr2", 200, 400, 45, 25, "0,75,749"), ("chr10", 100, 300, 20, 8, "0,20,200")]
    blocks = [write_blocks(tmp_path / "b0.tsv.gz", shard_0, shard="0/2"), write_blocks(tmp_path / "b1.tsv.gz", shard_1)]
    assert gvcf_postprocess(probs, ref, tmp_path / "calls.vcf.gz", blocks, tmp_path / "calls.g.vcf.gz") == 0
    lines = body(tmp_path / "calls.g.vcf.gz")
    joined = "0/0:45:25:0,75,749"
    assert [line for line in lines if "END=" in line] == [
        block("chr2", 1, 50, seq["chr2"][0], joined),
        block("chr2", 52, 400, seq["chr2"][51], joined),
        block("chr10", 1, 100, seq["chr10"][0], "./.:0:0:0,0,0"),
        block("chr10", 101, 300, seq["chr10"][100], "0/0:20:8:0,20,200"),
    ]


def test_gvcf_is_valid_indexed_and_leaves_the_vcf_unchanged(reference, gvcf_inputs, tmp_path):
    ref, _ = reference
    probs, blocks = gvcf_inputs
    (tmp_path / "plain").mkdir()
    run_postprocess(str(probs), str(ref), str(tmp_path / "plain" / "calls.vcf.gz"), command="same")
    run_postprocess(str(probs), str(ref), str(tmp_path / "calls.vcf.gz"), command="same", gvcf_blocks=blocks,
                    gvcf_out=str(tmp_path / "calls.g.vcf.gz"))  # fmt: skip
    for name in ("calls.vcf.gz", "calls.vcf.gz.tbi"):
        assert (tmp_path / name).read_bytes() == (tmp_path / "plain" / name).read_bytes(), name
    gvcf = tmp_path / "calls.g.vcf.gz"
    with open(gvcf, "rb") as handle:
        assert handle.read(4) == b"\x1f\x8b\x08\x04"  # BGZF
    with pysam.VariantFile(str(gvcf)) as vcf:
        found = list(vcf.fetch("chr10", 110, 121))  # by the index: the block 101-120 and the call at 121
        assert [(r.pos, r.stop, r.alts) for r in found] == [(101, 120, ("<*>",)), (121, 121, (found[1].alts[0], "<*>"))]
        assert found[0].samples[0]["MIN_DP"] == 8 and found[0].samples[0]["PL"] == (0, 20, 200)
        assert found[0].samples[0]["GT"] == (0, 0) and found[1].samples[0]["AD"][-1] == 0
    if shutil.which("bcftools"):
        view = subprocess.run(["bcftools", "view", "-H", str(gvcf)], capture_output=True, text=True, check=True)
        assert len(view.stdout.splitlines()) == 19 and not view.stderr
        # --gvcf2vcf expands each block to one line per base: 400 + 300 bases scanned, minus the records' bases
        expanded = subprocess.run(["bcftools", "convert", "--gvcf2vcf", "-f", str(ref), str(gvcf)],
                                  capture_output=True, text=True, check=True)  # fmt: skip
        lines = [line for line in expanded.stdout.splitlines() if not line.startswith("#")]
        record_bases = 1 + 3 + 1 + 1 + 3 + 1 + 2 + 1
        assert len(lines) == 700 - record_bases + 8


def test_bad_blocks_files_one_line_and_no_output(reference, gvcf_inputs, tmp_path, capsys):
    ref, _ = reference
    probs, (good, _) = gvcf_inputs
    bad = tmp_path / "bad"
    bad.mkdir()
    other_ref = write_blocks(bad / "other-ref.tsv.gz", [("chr2", 0, 10, 50, 30, "0,90,899")], {"chr2": 500})
    other_contig = write_blocks(bad / "contig.tsv.gz", [("chrZ", 0, 10, 50, 30, "0,90,899")], {"chrZ": 400})
    malformed = write_blocks(bad / "malformed.tsv.gz", [("chr2", 0, 10, 50, 30, "0,90")])
    beyond = write_blocks(bad / "beyond.tsv.gz", [("chr2", 390, 410, 50, 30, "0,90,899")])
    unsorted = write_blocks(bad / "unsorted.tsv.gz", [("chr10", 200, 210, 0, 0, "0,0,0"),
                                                      ("chr10", 150, 160, 0, 0, "0,0,0")])  # fmt: skip
    foreign = write_blocks(bad / "foreign.tsv.gz", [], first="##fileformat=VCFv4.2")
    other_run = write_blocks(bad / "other-run.tsv.gz", [("chr10", 100, 300, 20, 8, "0,20,200")], run="another")
    older = write_blocks(bad / "older.tsv.gz", [("chr10", 100, 300, 20, 8, "0,20,200")], shard=None)
    plain = bad / "plain.tsv.gz"
    plain.write_text("chr2\t0\t10\n")
    truncated = bad / "truncated.tsv.gz"
    truncated.write_bytes(gzip.compress(b"##deepflows_gvcf_blocks=1\n##contig=<ID=chr2,length=400>\n" * 40)[:60])
    cases = {
        other_ref: "contig chr2 has length 500 but 400 in reference",
        other_contig: "contig chrZ is not in reference",
        malformed: "line 10: 'chr2\\t0\\t10\\t50\\t30\\t0,90' is not contig, start, end, gq, min_dp, pl",
        beyond: "line 10: block 390-410 is not within chr2 (length 400)",
        unsorted: "line 11: block chr10:151-160 overlaps or precedes the one before",
        foreign: "not a deepflows gVCF blocks file",
        other_run: f"blocks of another run than the examples called in {probs}",
        older: "records no shard and run (written by an older deepflows make-examples --gvcf)",
        plain: "cannot read",
        truncated: "cannot read",
        bad / "none.tsv.gz": "gVCF blocks file not found",
    }
    for path, expected in cases.items():
        assert gvcf_postprocess(probs, ref, bad / "out.vcf.gz", [good, path], bad / "out.g.vcf.gz") == 2, expected
        message = capsys.readouterr().err.strip().splitlines()
        assert len(message) == 1 and message[0].startswith(f"deepflows postprocess: error: {path}: "), message
        assert expected in message[0], message
        assert not list(bad.glob("*out*")) and not list(bad.glob(".*")), expected
    # the same shard twice; a shard missing (the gVCF would have a hole)
    assert gvcf_postprocess(probs, ref, bad / "out.vcf.gz", [good, good], bad / "out.g.vcf.gz") == 2
    assert f"{good}: blocks of shard 0/2 given twice (also {good})" in capsys.readouterr().err
    assert gvcf_postprocess(probs, ref, bad / "out.vcf.gz", [good], bad / "out.g.vcf.gz") == 2
    assert "--gvcf-blocks: the blocks of shard(s) 1/2 of 2 are missing" in capsys.readouterr().err
    assert not list(bad.glob("*out*")) and not list(bad.glob(".*"))
    assert main(["postprocess", "--probs", str(probs), "--ref", str(ref), "--out", str(bad / "out.vcf.gz"),
                 "--gvcf-blocks", str(good)]) == 2  # fmt: skip
    assert "--gvcf-blocks and --gvcf-out go together" in capsys.readouterr().err
    assert not list(bad.glob("*out*"))
