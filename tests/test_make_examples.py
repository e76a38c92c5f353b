"""make_examples on hand-built reads: candidates, pixel encodings, sharding, determinism, bad input."""

from __future__ import annotations

import gzip
import itertools
import shutil

import numpy as np
import pysam
import pytest
import zarr
from synthetic import Read, random_reference, write_bam

from deepflows.cli import main
from deepflows.genomics.examples.pileup_image import BASE_COLOR
from deepflows.store.examples import open_examples

CONTIG, LENGTH, READ_LEN = "chrT", 4000, 100
SNP, LOWQ, LOWMQ, DELETION, INSERTION, MULTI, DEEP = 400, 800, 1200, 1600, 2000, 2400, 3000


def _reads_at(ref, site, depth, alt_of, prefix, rng):
    """`depth` reads covering `site`; alt_of(i) -> None (reference) or ("snp", base) / ("del", n) / ("ins", seq)."""
    reads = []
    for i in range(depth):
        s = int(rng.integers(site - READ_LEN + 15, site - 15))
        anchor = site + 1 - s
        allele = alt_of(i)
        if allele is None:
            seq, cigar = ref[s : s + READ_LEN], [(0, READ_LEN)]
        elif allele[0] == "snp":
            seq, cigar = ref[s:site] + allele[1] + ref[site + 1 : s + READ_LEN], [(0, READ_LEN)]
        elif allele[0] == "del":
            n = allele[1]
            seq = ref[s : site + 1] + ref[site + 1 + n : s + READ_LEN + n]
            cigar = [(0, anchor), (2, n), (0, READ_LEN - anchor)]
        else:
            ins = allele[1]
            seq = ref[s : site + 1] + ins + ref[site + 1 : s + READ_LEN - len(ins)]
            cigar = [(0, anchor), (1, len(ins)), (0, READ_LEN - anchor - len(ins))]
        reads.append(Read(f"{prefix}{i}", s, seq, cigar, reverse=bool(i % 2), read1=bool(i % 3)))
    return reads


def _other(base):
    return {"A": "C", "C": "G", "G": "T", "T": "A"}[base]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A reference and BAM with known variants at known sites."""
    d = tmp_path_factory.mktemp("synthetic")
    ref = random_reference(d / "ref.fa", {CONTIG: LENGTH, "chrU": 500}, seed=3)[CONTIG]
    rng = np.random.default_rng(7)
    reads = []
    reads += _reads_at(ref, SNP, 40, lambda i: ("snp", _other(ref[SNP])) if i % 2 else None, "snp", rng)
    reads += _reads_at(ref, DELETION, 30, lambda i: ("del", 2), "del", rng)
    reads += _reads_at(ref, INSERTION, 30, lambda i: ("ins", "GT") if i % 2 else None, "ins", rng)
    x, y = _other(ref[MULTI]), _other(_other(ref[MULTI]))
    reads += _reads_at(ref, MULTI, 30, lambda i: ("snp", x if i % 2 else y), "multi", rng)
    reads += _reads_at(ref, DEEP, 150, lambda i: ("snp", _other(ref[DEEP])) if i % 2 else None, "deep", rng)
    # Alt evidence that must not count: low base quality, low mapping quality, duplicates.
    lowq = _reads_at(ref, LOWQ, 30, lambda i: ("snp", _other(ref[LOWQ])) if i < 6 else None, "lowq", rng)
    for r in lowq[:6]:
        r.qual = [35] * READ_LEN
        r.qual[LOWQ - r.start] = 5
    lowmq = _reads_at(ref, LOWMQ, 30, lambda i: ("snp", _other(ref[LOWMQ])) if i < 8 else None, "lowmq", rng)
    for r in lowmq[:4]:
        r.mapq = 3
    for r in lowmq[4:8]:
        r.flag_extra = 0x400
    reads += lowq + lowmq
    bam = write_bam(d / "reads.bam", {CONTIG: LENGTH, "chrU": 500}, reads)
    return {"dir": d, "ref": ref, "fasta": d / "ref.fa", "bam": bam, "alts": (x, y)}


def _make(sample, out, *extra):
    code = main(["make-examples", "--reads", str(sample["bam"]), "--ref", str(sample["fasta"]),
                 "--regions", CONTIG, "--out", str(out), *extra])  # fmt: skip
    assert code == 0
    return zarr.open_group(str(out), mode="r")


@pytest.fixture(scope="module")
def shard(sample):
    return _make(sample, sample["dir"] / "all.zarr")


def test_candidates_are_the_injected_variants(sample, shard):
    ref = sample["ref"]
    found = list(zip(shard["start"][:].tolist(), shard["ref"][:].tolist(), shard["alts"][:].tolist(),
                     shard["alt_indices"][:].tolist()))  # fmt: skip
    x, y = sorted(sample["alts"])
    assert found == [
        (SNP, ref[SNP], _other(ref[SNP]), "0"),
        (DELETION, ref[DELETION : DELETION + 3], ref[DELETION], "0"),
        (INSERTION, ref[INSERTION], ref[INSERTION] + "GT", "0"),
        (MULTI, ref[MULTI], f"{x},{y}", "0"),
        (MULTI, ref[MULTI], f"{x},{y}", "1"),
        (MULTI, ref[MULTI], f"{x},{y}", "0,1"),
        (DEEP, ref[DEEP], _other(ref[DEEP]), "0"),
    ]
    assert shard["end"][0] == SNP + 1 and shard["end"][1] == DELETION + 3
    assert shard["allele_depth"][0] == "20,20" and shard["depth"][0] == 40
    assert shard.attrs["complete"] and shard.attrs["n_examples"] == 7
    assert shard.attrs["channels"][4] == "read_supports_variant"


def test_reference_rows_and_snp_pixels(sample, shard):
    image = shard["inputs"][0]
    ref = sample["ref"]
    codes = {"A": 0, "C": 1, "G": 2, "T": 3}
    expected = BASE_COLOR[[codes[b] for b in ref[SNP - 110 : SNP + 111]]]
    assert (image[:5, :, 0] == expected).all()
    assert (image[:5, :, 1:] == [254, 254, 70, 152, 50, 254, 254]).all()
    rows = image[5:45]
    assert (rows[:, :, 3] != 0).sum(axis=1).min() > 0  # 40 reads drawn
    assert (image[45:] == 0).all()  # unused rows stay black
    centre = rows[:, 110]
    alt_rows = centre[:, 0] == BASE_COLOR[codes[_other(ref[SNP])]]
    assert alt_rows.sum() == 20
    assert (centre[alt_rows, 4] == 254).all() and (centre[~alt_rows, 4] == 152).all()
    assert (centre[alt_rows, 5] == 254).all() and (centre[~alt_rows, 5] == 50).all()
    assert (centre[:, 1] == int(254 * 35 / 40)).all()
    assert (centre[:, 2] == 254).all()
    assert set(centre[:, 3]) == {70, 240}
    assert (centre[:, 6] == int(254 * 300 / 1000)).all()
    assert (centre[:, 7] == 254).all()  # every read covers the SNP
    starts = [np.nonzero(r[:, 3])[0][0] for r in rows]
    assert starts == sorted(starts)  # sorted by alignment start


def test_indels_are_drawn_at_their_anchor(shard):
    deletion = shard["inputs"][1][5:35]
    assert (deletion[:, 110, 0] == 0).all() and (deletion[:, 110, 5] == 254).all()
    assert (deletion[:, 111:113, 3] == 0).all()  # the deleted bases are gaps
    insertion = shard["inputs"][2][5:35]
    anchored = insertion[:, 110, 0] == 0
    assert anchored.sum() == 15
    assert (insertion[anchored, 110, 4] == 254).all() and (insertion[~anchored, 110, 4] == 152).all()


def test_multiallelic_supports_follow_the_combination(shard):
    support = [shard["inputs"][i][5:35, 110, 4] for i in (3, 4, 5)]
    assert (support[0] == 254).sum() == 15 and (support[1] == 254).sum() == 15
    assert (support[2] == 254).all()


def test_deep_site_is_downsampled_to_95_rows(shard):
    image = shard["inputs"][6]
    drawn = (image[:, :, 3] != 0).any(axis=1)
    assert drawn.sum() == 100  # 5 reference rows + 95 reads of 150


def test_shards_partition_the_same_examples(sample, shard):
    parts = [_make(sample, sample["dir"] / f"s{i}.zarr", "--shard", f"{i}/3", "--chunk-size", "2") for i in range(3)]
    assert sum(p.attrs["n_examples"] for p in parts) == shard.attrs["n_examples"]
    inputs, meta, labels = open_examples([sample["dir"] / f"s{i}.zarr" for i in range(3)])
    assert max(inputs.chunks[0]) == 2 and len(inputs.chunks[0]) >= 4 and labels is None  # several chunks
    assert np.array_equal(inputs.compute(), shard["inputs"][:])
    assert meta["start"].tolist() == shard["start"][:].tolist()


def test_rerun_is_identical(sample, shard):
    again = _make(sample, sample["dir"] / "again.zarr")
    assert np.array_equal(again["inputs"][:], shard["inputs"][:])


def test_empty_region_gives_an_empty_valid_shard(sample, tmp_path):
    group = zarr.open_group(str(_run_ok(sample, tmp_path / "e.zarr", "--regions", "chrU")), mode="r")
    assert group.attrs["complete"] and group["inputs"].shape == (0, 100, 221, 8)


def _run_ok(sample, out, *args):
    assert main(["make-examples", "--reads", str(sample["bam"]), "--ref", str(sample["fasta"]),
                 "--out", str(out), *args]) == 0  # fmt: skip
    return out


def _fails(capsys, argv, expected, out):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not out.exists() and not list(out.parent.glob(out.name + ".tmp*"))


def test_bad_inputs(sample, tmp_path, capsys):
    out = tmp_path / "x.zarr"
    base = ["make-examples", "--out", str(out)]
    good = ["--reads", str(sample["bam"]), "--ref", str(sample["fasta"])]
    _fails(capsys, base + ["--reads", str(tmp_path / "no.bam"), "--ref", str(sample["fasta"])], "not found", out)
    _fails(capsys, base + good + ["--regions", "chr9:1-100"], "contig 'chr9' is not in the reference", out)
    _fails(capsys, base + ["--reads", str(sample["bam"])], "--ref is required", out)
    _fails(capsys, base + ["--reads", str(tmp_path / "x.cram")], "CRAM needs the reference", out)
    _fails(capsys, base + good + ["--shard", "3/3"], "expected i/n", out)
    truncated = tmp_path / "trunc.bam"
    truncated.write_bytes(sample["bam"].read_bytes()[:-100])
    shutil.copy(f"{sample['bam']}.bai", f"{truncated}.bai")
    _fails(capsys, base + ["--reads", str(truncated), "--ref", str(sample["fasta"])], "truncated", out)


def test_contig_names_must_match_the_reference(sample, tmp_path, capsys):
    """Reads named `T` against a reference naming it `chrT`: the error names both sides."""
    renamed = tmp_path / "renamed.bam"
    with pysam.AlignmentFile(str(sample["bam"])) as src:
        header = src.header.to_dict()
        header["SQ"] = [{**sq, "SN": sq["SN"].removeprefix("chr")} for sq in header["SQ"]]
        with pysam.AlignmentFile(str(renamed), "wb", header=header) as dst:
            for read in src:
                dst.write(_renamed(read, dst.header))
    pysam.index(str(renamed))
    out = tmp_path / "x.zarr"
    _fails(capsys, ["make-examples", "--reads", str(renamed), "--ref", str(sample["fasta"]), "--regions", CONTIG,
                    "--out", str(out)], "the reads name it 'T'", out)  # fmt: skip


def _renamed(read, header):
    data = read.to_dict()
    data["ref_name"] = data["ref_name"].removeprefix("chr")
    data["next_ref_name"] = "="
    return pysam.AlignedSegment.from_dict(data, header)


def test_missing_bam_index_is_built(sample, tmp_path):
    bam = tmp_path / "noindex.bam"
    shutil.copy(sample["bam"], bam)
    _run_ok({**sample, "bam": bam}, tmp_path / "o.zarr", "--regions", f"{CONTIG}:1-600")
    assert (tmp_path / "noindex.bam.bai").exists()


def test_gzip_reference_that_is_not_bgzipped_is_refused(sample, tmp_path, capsys):
    fasta = tmp_path / "ref.fa.gz"
    with open(sample["fasta"], "rb") as src, gzip.open(fasta, "wb") as dst:
        dst.write(src.read())
    out = tmp_path / "x.zarr"
    _fails(capsys, ["make-examples", "--reads", str(sample["bam"]), "--ref", str(fasta), "--out", str(out)],
           "bgzip", out)  # fmt: skip


def test_regions_bed_may_be_gzipped(tmp_path):
    from deepflows.genomics.io.regions import read_bed

    plain, packed = tmp_path / "r.bed", tmp_path / "r.bed.gz"
    plain.write_text("# header\nchr1\t10\t20\nchr1\t30\t45\n")
    with gzip.open(packed, "wt") as handle:
        handle.write(plain.read_text())
    assert read_bed(packed) == read_bed(plain) and [iv.length for iv in read_bed(plain)] == [10, 15]



def _blocks(path):
    from deepflows.genomics.calling.gvcf_blocks import BlocksFile

    return list(BlocksFile(path, {CONTIG: LENGTH, "chrU": 500}, "ref.fa"))


@pytest.fixture(scope="module")
def gvcf_shard(sample):
    blocks = sample["dir"] / "blocks.tsv.gz"
    return _make(sample, sample["dir"] / "g.zarr", "--gvcf", str(blocks)), _blocks(blocks)


def test_gvcf_blocks_cover_every_non_candidate_position(shard, gvcf_shard):
    """--gvcf: blocks tile the region except the candidate starts; the examples stay the same arrays."""
    with_blocks, blocks = gvcf_shard
    for name in ("inputs", "contig", "start", "end", "ref", "alts", "alt_indices", "depth", "allele_depth"):
        assert np.array_equal(with_blocks[name][:], shard[name][:]), name
    covered = np.zeros(LENGTH, dtype=int)
    for b in blocks:
        covered[b.start : b.end] += 1
    candidates = sorted(set(shard["start"][:].tolist()))
    assert candidates == [SNP, DELETION, INSERTION, MULTI, DEEP]
    assert (covered[candidates] == 0).all() and np.delete(covered, candidates).tolist() == [1] * (LENGTH - 5)
    # merged: few blocks, and two touching blocks differ in GQ bin or GT
    assert len(blocks) < 200
    for a, b in itertools.pairwise(blocks):
        if a.end == b.start:
            assert (a.gq // 5, min(a.pl[1:]) > 0) != (b.gq // 5, min(b.pl[1:]) > 0)


def test_gvcf_blocks_values(gvcf_shard):
    _, blocks = gvcf_shard
    # before the first read: one zero-depth block, GQ 0, PL 0,0,0 (written ./.)
    first = blocks[0]
    assert (first.start, first.gq, first.min_dp, first.pl) == (0, 0, 0, (0, 0, 0))
    assert 0 < first.end <= SNP - READ_LEN + 15
    # right of the SNP: its 40 reads all cover SNP+1, all reference there. The block starting there has GQ 50
    # (capped) and the PL of 40 reference reads (its first position of least GQ); MIN_DP is its thinnest point.
    after = next(b for b in blocks if b.start == SNP + 1)
    assert (after.gq, after.pl) == (50, (0, 120, 1199)) and after.min_dp < 40


def test_gvcf_blocks_ignore_windows_and_follow_shards(sample, gvcf_shard, tmp_path, monkeypatch):
    """Blocks merge across make_examples' windows; shards cut them at their edges only."""
    from deepflows.genomics.examples import make_examples

    _, blocks = gvcf_shard
    monkeypatch.setattr(make_examples, "WINDOW", 150)
    _make(sample, tmp_path / "w.zarr", "--gvcf", str(tmp_path / "w.tsv.gz"))
    assert _blocks(tmp_path / "w.tsv.gz") == blocks
    parts = []
    for i in range(3):
        _make(sample, tmp_path / f"s{i}.zarr", "--shard", f"{i}/3", "--gvcf", str(tmp_path / f"s{i}.tsv.gz"))
        parts += _blocks(tmp_path / f"s{i}.tsv.gz")
    cuts = {b.end for b in parts} - {b.end for b in blocks}
    assert len(cuts) == 2 and {b.start for b in blocks} <= {b.start for b in parts}
    for part in parts:  # within one whole block, no less confident, of the same GT
        whole = next(b for b in blocks if b.start <= part.start and part.end <= b.end)
        assert whole.gq <= part.gq and whole.min_dp <= part.min_dp and (min(whole.pl[1:]) > 0) == (min(part.pl[1:]) > 0)


def test_gvcf_bad_options_leave_nothing(sample, tmp_path, capsys):
    out, blocks = tmp_path / "x.zarr", tmp_path / "b.tsv.gz"
    good = ["make-examples", "--reads", str(sample["bam"]), "--ref", str(sample["fasta"]), "--out", str(out)]
    _fails(capsys, good + ["--gvcf", str(blocks), "--gvcf-gq-binsize", "0"], "--gvcf-gq-binsize 0", out)
    _fails(capsys, good + ["--gvcf", str(tmp_path / "b.tsv")], "name it *.tsv.gz", out)
    _fails(capsys, good + ["--gvcf", str(blocks), "--regions", "chr9:1-100"], "contig 'chr9'", out)
    assert not list(tmp_path.iterdir())
    truncated = tmp_path / "in" / "trunc.bam"
    truncated.parent.mkdir()
    truncated.write_bytes(sample["bam"].read_bytes()[:-100])
    shutil.copy(f"{sample['bam']}.bai", f"{truncated}.bai")
    _fails(capsys, ["make-examples", "--reads", str(truncated), "--ref", str(sample["fasta"]), "--out", str(out),
                    "--gvcf", str(blocks)], "truncated", out)  # fmt: skip
    assert not list(tmp_path.glob("*b.tsv.gz*"))
