"""`deepflows call-variants`: probabilities aligned with their examples, checks before any work (missing or
incomplete shards, a model that does not fit), fixed-shape batches across shard boundaries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from deepflows.cli import STAGES, main
from deepflows.errors import UserError
from deepflows.genomics.calling.call_variants import META_FIELDS, _batches, open_probs, plan_batches
from deepflows.genomics.examples.pileup_image import CHANNELS
from deepflows.nn.model_dir import load_model, save_model
from deepflows.nn.models import build_model
from deepflows.store.examples import ShardWriter

SHAPE = (10, 21, 7)  # small images keep the test fast; the model pools globally

# (contig, start, ref, alts, alt_indices, depth, allele_depth): a SNP, a deletion, a multi-allelic site
# with its three examples, then SNPs; shard 0 gets the first five, shard 1 the rest.
EXAMPLES = [
    ("chr1", 100, "A", "G", "0", 30, "14,16"),
    ("chr1", 200, "ACT", "A", "0", 25, "12,13"),
    ("chr1", 300, "GTT", "G,GT", "0", 33, "3,15,15"),
    ("chr1", 300, "GTT", "G,GT", "1", 33, "3,15,15"),
    ("chr1", 300, "GTT", "G,GT", "0,1", 33, "3,15,15"),
    ("chr1", 400, "C", "T", "0", 20, "0,20"),
    ("chr2", 50, "T", "C", "0", 31, "20,11"),
    ("chr2", 60, "G", "A", "0", 28, "28,0"),
    ("chr2", 70, "A", "C", "0", 12, "6,6"),
]
SPLIT = 5


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size=(n, *SHAPE), dtype=np.uint8)


IMAGES = images(len(EXAMPLES))


def make_shard(path: Path, index: int, count: int, rows: range, complete: bool = True) -> Path:
    attrs = {"sample": "HG-test", "channels": list(CHANNELS), "shape": list(SHAPE), "shard_index": index,
             "shard_count": count, "regions": [], "parameters": {}, "deepflows_version": "test", "command": "test",
             "sources": {"reads": {"path": "r.bam", "size": 1, "sha256": "r"},
                         "reference": {"path": "ref.fa", "size": 1, "sha256": "f"}}}  # fmt: skip
    with ShardWriter(path, SHAPE, attrs, labelled=False, chunk_size=2) as writer:
        for i in rows:
            contig, start, ref, alts, alt_indices, depth, allele_depth = EXAMPLES[i]
            writer.add(IMAGES[i], contig=contig, start=start, end=start + len(ref), ref=ref, alts=alts,
                       alt_indices=alt_indices, depth=depth, allele_depth=allele_depth)  # fmt: skip
        writer.commit({"stats": {}})
    if not complete:
        zarr.open_group(str(path), mode="r+").attrs["complete"] = False
    return path


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("shards")
    return [make_shard(d / "examples-0-of-2.zarr", 0, 2, range(SPLIT)),
            make_shard(d / "examples-1-of-2.zarr", 1, 2, range(SPLIT, len(EXAMPLES)))]  # fmt: skip


def tiny_model(directory: Path, channels=tuple(CHANNELS), shape=SHAPE, name="tiny", **meta) -> Path:
    model = build_model("small_cnn", {"widths": [4]}, shape[-1], 0)
    save_model(directory, model, {"name": name, "architecture": "small_cnn", "options": {"widths": [4]},
                                  "input_shape": list(shape), "channels": list(channels), **meta})  # fmt: skip
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def call(shards, model, out, *extra) -> int:
    return main(["call-variants", "--examples", *map(str, shards), "--model", str(model), "--out", str(out), *extra])


def test_stage_is_registered():
    assert STAGES["call-variants"][0] == "deepflows.genomics.calling.call_variants"
    assert STAGES["postprocess"][0] == "deepflows.genomics.calling.postprocess"


def test_probabilities_align_with_examples(shards, model_dir, tmp_path):
    out = tmp_path / "probs.zarr"
    # shards given out of order; batch 4 spans the shard boundary and pads the last batch (9 = 4 + 4 + 1)
    assert call(shards[::-1], model_dir, out, "--batch-size", "4") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probs.zarr"]
    group = open_probs(out)
    probs = group["probs"][:]
    assert probs.shape == (len(EXAMPLES), 3) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    columns = list(zip(*EXAMPLES))
    for key, values in zip(("contig", "start", "ref", "alts", "alt_indices", "depth", "allele_depth"), columns):
        assert group[key][:].tolist() == list(values), key
    assert group["end"][:].tolist() == [s + len(r) for s, r in zip(columns[1], columns[2])]

    # each row is the model's answer for that row's image (no shift, no mix-up with padding)
    model, meta = load_model(model_dir)
    expected = np.asarray(__import__("jax").nn.softmax(model(IMAGES), axis=-1))
    assert np.allclose(probs, expected, atol=1e-5)
    assert not np.allclose(probs[0], probs[1])  # the rows really differ

    attrs = dict(group.attrs)
    assert attrs["model"]["name"] == "tiny" and attrs["model"]["sha256"] == meta["sha256"]
    assert [e["path"] for e in attrs["examples"]] == [str(s) for s in shards]
    assert [e["n_examples"] for e in attrs["examples"]] == [SPLIT, len(EXAMPLES) - SPLIT]
    assert attrs["sample"] == "HG-test" and attrs["complete"] is True and attrs["n_examples"] == len(EXAMPLES)
    assert attrs["command"].startswith("deepflows call-variants --examples") and attrs["deepflows_version"]
    assert attrs["stats"]["batch_size"] == 4 and attrs["stats"]["examples_per_second"] > 0
    assert attrs["sources"]["reference"]["path"] == "ref.fa"

    # micro-batches inside the jitted function give the same answers (batch 9 -> 12 = 3 x 4, padded)
    out2 = tmp_path / "micro.zarr"
    assert call(shards, model_dir, out2, "--batch-size", "16", "--micro-batch", "4") == 0
    assert np.allclose(zarr.open_group(str(out2), mode="r")["probs"][:], probs, atol=1e-5)
    assert zarr.open_group(str(out2), mode="r").attrs["stats"]["batch_size"] == 12

    # a calibrated model's temperature divides the logits: softer probabilities, the same most likely class
    calibrated = tmp_path / "calibrated"
    shutil.copytree(model_dir, calibrated)
    description = json.loads((calibrated / "model.json").read_text())
    description["calibration"] = {"method": "temperature", "temperature": 2.0, "call_temperature": 1.5}
    (calibrated / "model.json").write_text(json.dumps(description))
    out3 = tmp_path / "calibrated.zarr"
    assert call(shards, calibrated, out3) == 0
    softened = zarr.open_group(str(out3), mode="r")
    expected = np.asarray(__import__("jax").nn.softmax(model(IMAGES) / 2.0, axis=-1))
    assert np.allclose(softened["probs"][:], expected, atol=1e-5)
    assert np.array_equal(softened["probs"][:].argmax(1), probs.argmax(1))
    assert softened.attrs["model"]["temperature"] == 2.0 and attrs["model"]["temperature"] == 1.0
    # the call temperature is postprocess's: only passed on
    assert softened.attrs["model"]["call_temperature"] == 1.5 and attrs["model"]["call_temperature"] == 1.0


def test_missing_or_incomplete_shard_is_refused_before_any_work(shards, tmp_path, capsys):
    out = tmp_path / "probs.zarr"
    no_model = tmp_path / "no-model"  # never opened: the shard check comes first
    assert call(shards[1:], no_model, out) == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1] == "deepflows call-variants: error: missing shard(s) 0/2 of 2"
    )
    incomplete = make_shard(tmp_path / "examples-0-of-2.zarr", 0, 2, range(SPLIT), complete=False)
    assert call([incomplete, shards[1]], no_model, out) == 2
    assert "shard is incomplete" in capsys.readouterr().err.strip().splitlines()[-1]
    assert call([shards[0], shards[0], shards[1]], no_model, out) == 2
    assert "given twice" in capsys.readouterr().err.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["examples-0-of-2.zarr"]  # no output, no temporary


def test_model_that_does_not_fit_gets_one_line(shards, tmp_path, capsys):
    out = tmp_path / "probs.zarr"
    wrong_channels = tiny_model(tmp_path / "six", channels=CHANNELS[:6], shape=(*SHAPE[:2], 6))
    swapped = list(CHANNELS)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    reordered = tiny_model(tmp_path / "reordered", channels=swapped)
    taller = tiny_model(tmp_path / "taller", shape=(100, 221, 7))
    realigned = tiny_model(tmp_path / "realigned", realign=True)  # the shards were made without --realign
    cases = {
        realigned: "examples were made without --realign but the model was trained on examples made with it",
        wrong_channels: "examples are [10, 21, 7] but the model expects [10, 21, 6]",
        reordered: "example channels ['read_base', 'base_quality'",
        taller: "examples are [10, 21, 7] but the model expects [100, 221, 7]",
        tmp_path / "none": "not a model directory",
    }
    for model, expected in cases.items():
        assert call(shards, model, out) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[-1].startswith("deepflows call-variants: error: ") and expected in lines[-1], lines[-1]
        assert sum("error" in line for line in lines) == 1
        assert not out.exists() and not list(tmp_path.glob("probs.zarr.tmp-*"))


def test_existing_output_is_refused(shards, model_dir, tmp_path, capsys):
    out = tmp_path / "probs.zarr"
    out.mkdir()
    assert call(shards, model_dir, out) == 2
    assert "already exists" in capsys.readouterr().err.strip().splitlines()[-1]


def test_probs_store_checks(shards, model_dir, tmp_path):
    out = tmp_path / "probs.zarr"
    assert call(shards, model_dir, out) == 0
    shutil.rmtree(out / "alt_indices")
    with pytest.raises(UserError, match="array alt_indices is missing"):
        open_probs(out)
    with pytest.raises(UserError, match="not a deepflows probs store"):
        open_probs(shards[0])
    assert set(META_FIELDS) == {"contig", "start", "end", "ref", "alts", "alt_indices", "depth", "allele_depth"}


def test_batching_plan():
    assert plan_batches(5000, 256, 8) == (256, 8)
    assert plan_batches(9, 512, 8) == (16, 8)  # fewer examples than a batch: a smaller batch, micro-aligned
    assert plan_batches(9, 4, 8) == (4, None)
    assert plan_batches(0, 512, None) == (1, None)
    assert plan_batches(1000, 250, 8) == (256, 8)
    blocks = [np.full((3, 1), 1, np.uint8), np.full((2, 1), 2, np.uint8), np.full((4, 1), 3, np.uint8)]
    got = list(_batches(iter(blocks), 4, (1,)))
    assert [n for _, n in got] == [4, 4, 1]
    assert np.concatenate([b[:, 0] for b, _ in got]).tolist() == [1, 1, 1, 2, 2, 3, 3, 3, 3, 0, 0, 0]


def test_probs_feed_postprocess(shards, model_dir, tmp_path):
    """call-variants -> postprocess: one record per site (the three examples at chr1:301 make one)."""
    import pysam

    sequences = {"chr1": list("C" * 500), "chr2": list("C" * 100)}
    for contig, start, ref, *_ in EXAMPLES:
        sequences[contig][start : start + len(ref)] = ref
    fasta = tmp_path / "ref.fa"
    fasta.write_text("".join(f">{name}\n{''.join(seq)}\n" for name, seq in sequences.items()))
    probs, vcf = tmp_path / "probs.zarr", tmp_path / "calls.vcf.gz"
    assert call(shards, model_dir, probs) == 0
    assert main(["postprocess", "--probs", str(probs), "--ref", str(fasta), "--out", str(vcf)]) == 0
    with pysam.VariantFile(str(vcf)) as reader:
        records = list(reader)
        assert reader.header.samples[0] == "HG-test"
        assert "deepflows_model_sha256" in str(reader.header)
    sites = sorted({(c, s) for c, s, *_ in EXAMPLES})
    assert [(r.contig, r.start) for r in records] == sites
    assert all(r.filter.keys()[0] in ("PASS", "RefCall", "LowQual") for r in records)
