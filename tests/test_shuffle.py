"""`deepflows shuffle-examples`: labelled shards -> one shuffled training store with a region-held-back tuning split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from deepflows.cli import STAGES, main
from deepflows.errors import UserError
from deepflows.store.examples import ShardWriter
from deepflows.store.shuffle import (
    BucketFile,
    open_training_store,
    parse_tune_region,
    route,
    shuffle_examples,
)

SHAPE = (4, 6, 3)  # small images keep the test fast; the store does not care about the shape
TUNE = ["c1:1001-2000"]
MARGIN = 50


def make_shard(path: Path, ids: range, contig: str = "c1", labelled: bool = True, complete: bool = True,
               realign: bool = False) -> Path:  # fmt: skip
    """A shard whose example `i` has depth = i, start = 10 * i, label = i % 3 and an image encoding i."""
    attrs = {"sample": "s", "channels": ["a", "b", "c"], "shape": list(SHAPE), "shard_index": 0, "shard_count": 1,
             "regions": [f"{contig}:{10 * ids.start + 1}-{10 * ids.stop}"], "parameters": {"realign": realign},
             "sources": {"reads": {"path": f"{path}.bam", "size": 1, "sha256": f"sha-{path.name}"}}}  # fmt: skip
    with ShardWriter(path, SHAPE, attrs, labelled=labelled, chunk_size=8) as writer:
        for i in ids:
            image = np.full(SHAPE, i % 251, dtype=np.uint8)
            image[0, 0, 0] = i // 251
            writer.add(image, label=(i % 3) if labelled else None, contig=contig, start=10 * i, end=10 * i + 1,
                       ref="A", alts="G", alt_indices="0", depth=i, allele_depth="1,2")  # fmt: skip
        writer.commit({"stats": {}})
    if not complete:
        zarr.open_group(str(path), mode="r+").attrs["complete"] = False
    return path


@pytest.fixture
def shards(tmp_path) -> list[Path]:
    # c1 examples start at 0..2990 (ids 0..299); tuning region c1:1001-2000 is ids 100..199
    return [
        make_shard(tmp_path / "a.zarr", range(130)),
        make_shard(tmp_path / "b.zarr", range(130, 300)),
        make_shard(tmp_path / "c.zarr", range(300, 390), contig="c2"),
        make_shard(tmp_path / "empty.zarr", range(390, 390), contig="c2"),
    ]


def shuffle(shards, out, seed=5, **kw):
    options = {"tune_regions": TUNE, "tune_margin": MARGIN, "seed": seed, "bucket_size": 32, "chunk_size": 8, **kw}
    return shuffle_examples(shards, out, **options)


def split_ids(store: Path, split: str) -> np.ndarray:
    inputs, meta, labels = open_training_store(store, split)
    images = inputs.compute()
    ids = meta["depth"].to_numpy()
    assert np.array_equal(images[:, 1, 1, 1], ids % 251) and np.array_equal(images[:, 0, 0, 0], ids // 251)
    assert np.array_equal(labels.compute(), ids % 3)  # labels travel with their examples
    assert np.array_equal(meta["start"].to_numpy(), 10 * ids)
    return ids


def test_every_example_once_and_splits_by_region(shards, tmp_path):
    out = tmp_path / "train.zarr"
    summary = shuffle(shards, out)
    train, tune = split_ids(out, "train"), split_ids(out, "tune")
    assert len(set(train)) == len(train) and len(set(tune)) == len(tune) and not set(train) & set(tune)
    # tune holds exactly the examples starting inside the region; MARGIN bp either side (5 ids each) are left out
    assert sorted(tune) == list(range(100, 200))
    left_out = set(range(95, 100)) | set(range(200, 205))
    assert sorted(train) == sorted(set(range(390)) - set(range(100, 200)) - left_out)
    assert summary["left_out_near_tune"] == len(left_out) and summary["realign"] is False
    for split, ids in (("train", train), ("tune", tune)):
        classes = dict(zip(("hom_ref", "het", "hom_alt"), np.bincount(ids % 3, minlength=3).tolist()))
        assert summary["splits"][split]["classes"] == classes
        assert summary["splits"][split]["examples"] == len(ids)
    root = zarr.open_group(str(out), mode="r")
    assert root.attrs["complete"] is True and root.attrs["tune_regions"] == TUNE and root.attrs["seed"] == 5
    assert root.attrs["splits"]["train"]["classes"] == summary["splits"]["train"]["classes"]
    assert len(root.attrs["sources"]) == 4
    assert root["train"]["inputs"].chunks[0] == 8 and summary["splits"]["train"]["buckets"] == 9  # ceil(280/32)
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name or "buckets" in p.name]


def test_shuffle_mixes_shards_and_is_deterministic(shards, tmp_path):
    first = split_ids(shuffle(shards, tmp_path / "1.zarr")["store"], "train")
    again = split_ids(shuffle(shards[::-1], tmp_path / "2.zarr")["store"], "train")  # argument order does not matter
    other = split_ids(shuffle(shards, tmp_path / "3.zarr", seed=6)["store"], "train")
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other) and sorted(first) == sorted(other)
    assert not np.array_equal(first, np.sort(first))
    # the first few examples already come from all three non-empty shards
    assert {0 if i < 130 else 1 if i < 300 else 2 for i in first[:30]} == {0, 1, 2}
    for name in ("inputs", "label", "contig"):
        a = zarr.open_group(str(tmp_path / "1.zarr"), mode="r")["train"][name][:]
        b = zarr.open_group(str(tmp_path / "2.zarr"), mode="r")["train"][name][:]
        assert np.array_equal(a, b)


def test_shuffle_is_uniform(tmp_path):
    """Over many seeds, examples from each third of the input land evenly in each third of the output,
    although the input is read in blocks and the output made from 3 buckets."""
    shard = make_shard(tmp_path / "s.zarr", range(48))
    table = np.zeros((3, 3), dtype=int)  # input third -> output third
    for seed in range(30):
        out = tmp_path / f"u{seed}.zarr"
        shuffle_examples([shard], out, seed=seed, bucket_size=16, chunk_size=8)
        depth = zarr.open_group(str(out), mode="r")["train"]["depth"][:]
        np.add.at(table, (depth // 16, np.arange(48) // 16), 1)
    # 160 expected per cell (sd about 10); a shuffle that kept buckets or blocks apart would be far off
    assert table.min() >= 115 and table.max() <= 205, table


def test_no_tune_regions_gives_an_empty_tune_split(shards, tmp_path):
    summary = shuffle(shards, tmp_path / "t.zarr", tune_regions=[], tune_margin=0)
    assert summary["splits"]["tune"]["examples"] == 0 and summary["splits"]["train"]["examples"] == 390
    inputs, meta, labels = open_training_store(tmp_path / "t.zarr", "tune")
    assert inputs.shape == (0, *SHAPE) and len(meta) == 0 and labels.shape == (0,)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "missing.zarr: shard not found"),
        ("incomplete", "bad.zarr: shard is incomplete"),
        ("unlabelled", "bad.zarr: shard has no labels"),
        ("twice", "a.zarr: shard given twice"),
        ("corrupt", "b.zarr: chunk inputs/c/"),
        ("tune-elsewhere", "--tune-regions chrX:1-100: no example starts inside them"),
        ("realigned", "bad.zarr: made with --realign, unlike the shards before it"),
    ],
)
def test_bad_input_is_refused_with_one_line_and_leaves_nothing(shards, tmp_path, capsys, damage, message):
    args = [str(p) for p in shards]
    tune = TUNE
    if damage == "missing":
        args.append(str(tmp_path / "missing.zarr"))
    elif damage == "incomplete":
        args.append(str(make_shard(tmp_path / "bad.zarr", range(500, 510), complete=False)))
    elif damage == "unlabelled":
        args.append(str(make_shard(tmp_path / "bad.zarr", range(500, 510), labelled=False)))
    elif damage == "twice":
        args.append(args[0])
    elif damage == "corrupt":
        chunk = next((shards[1] / "inputs" / "c").rglob("*"))
        while chunk.is_dir():
            chunk = next(chunk.iterdir())
        chunk.write_bytes(b"not blosc")
    elif damage == "tune-elsewhere":
        tune = ["chrX:1-100"]
    elif damage == "realigned":  # the shards before it were made without --realign
        args.append(str(make_shard(tmp_path / "bad.zarr", range(500, 510), realign=True)))
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "store.zarr"
    code = main(["shuffle-examples", *args, "--out", str(out), "--seed", "1", "--tune-regions", *tune,
                 "--bucket-size", "16", "--summary", str(tmp_path / "summary.json")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("deepflows shuffle-examples: error: ") and message in err[-1], err[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no store, no temporary store, no buckets


def test_existing_output_is_not_overwritten(shards, tmp_path):
    (tmp_path / "out.zarr").mkdir()
    with pytest.raises(UserError, match="already exists"):
        shuffle(shards, tmp_path / "out.zarr")


def test_cli_writes_store_and_summary(shards, tmp_path):
    assert STAGES["shuffle-examples"][0] == "deepflows.store.shuffle"
    out, summary = tmp_path / "cli.zarr", tmp_path / "cli.json"
    code = main(["shuffle-examples", *map(str, shards), "--out", str(out), "--seed", "3", "--tune-regions", *TUNE,
                 "--tune-margin", str(MARGIN), "--bucket-size", "64", "--chunk-size", "16", "--summary", str(summary)])
    assert code == 0
    data = json.loads(summary.read_text())
    assert data["splits"]["tune"]["examples"] == 100 and data["splits"]["train"]["bytes_per_example"] > 0
    inputs, meta, labels = open_training_store(out)
    assert inputs.chunks[0][0] == 16 and inputs.shape[0] == labels.shape[0] == len(meta) == 280
    with pytest.raises(UserError, match="split 'dev'"):
        open_training_store(out, "dev")


def test_route_and_region_parsing():
    contig = np.array(["c1", "c1", "c1", "c2", "c1"], dtype=np.dtypes.StringDType())
    start = np.array([999, 1000, 2000, 1500, 1990])
    region = parse_tune_region("c1:1,001-2,000")
    assert (region.start, region.end) == (1000, 2000)
    assert route(contig, start, [region], 0).tolist() == [0, 1, 0, 0, 1]
    assert route(contig, start, [region], 1).tolist() == [-1, 1, -1, 0, 1]
    with pytest.raises(UserError, match="expected chr:start-end"):
        parse_tune_region("c1")


def test_bucket_file_round_trip(tmp_path):
    bucket = BucketFile(tmp_path / "b.bin")
    strings = np.array(["", "A,C", "é"], dtype=np.dtypes.StringDType())
    bucket.append({"s": strings, "x": np.arange(3, dtype=np.int8), "img": np.ones((3, 2, 2), np.uint8)})
    bucket.append({"s": strings[:1], "x": np.arange(1, dtype=np.int8), "img": np.zeros((1, 2, 2), np.uint8)})
    data = bucket.read()
    assert data["s"].tolist() == ["", "A,C", "é", ""] and data["x"].tolist() == [0, 1, 2, 0]
    assert data["img"].shape == (4, 2, 2) and data["img"][:3].all() and not data["img"][3].any()
