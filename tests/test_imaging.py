"""Imaging foundation: PNG/TIFF reading, OME-Zarr writing and reading, Dask-tiled scoring, `deepflows focus`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("tifffile")
pytest.importorskip("flax")

import tifffile
from PIL import Image

from deepflows.cli import main
from deepflows.errors import UserError
from deepflows.imaging.focus import legend
from deepflows.imaging.focus_data import synthetic_field
from deepflows.imaging.focus_model import PATCH, Scorer, certainty, to_patches
from deepflows.imaging.io import OmeZarrWriter, ingest, open_ome_zarr, read_image
from deepflows.imaging.tiles import predict_lazily, score_plane

# A deliberately small focus_cnn, so that the CLI tests do not wait for the full-size model.
TINY = {"widths": [4, 8], "hidden": 16, "dropout": 0.0}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from deepflows.nn.model_dir import save_model
    from deepflows.nn.models import build_model

    directory = tmp_path_factory.mktemp("model")
    model = build_model("focus_cnn", TINY, channels=1, seed=3)
    save_model(directory, model, {"architecture": "focus_cnn", "options": TINY, "input_shape": [PATCH, PATCH, 1],
                                  "channels": ["intensity"]})  # fmt: skip
    return directory


@pytest.fixture(scope="module")
def tiny_scorer(tiny_model_dir):
    from deepflows.nn.model_dir import load_model

    return Scorer(load_model(tiny_model_dir)[0], batch_size=16)


def test_png_and_tiff_axes_and_bit_depths(tmp_path):
    field = synthetic_field((90, 120), seed=1)
    Image.fromarray(field).save(tmp_path / "a16.png")
    Image.fromarray((field // 16).astype(np.uint8)).save(tmp_path / "a8.png")
    Image.fromarray(np.stack([field // 16] * 3, axis=-1).astype(np.uint8)).save(tmp_path / "rgb.png")
    tifffile.imwrite(tmp_path / "z.tif", np.stack([field, field // 2]), metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "c.tif", np.stack([field] * 2), metadata={"axes": "CYX"})
    tifffile.imwrite(tmp_path / "plain.tif", field)

    pixels, axes = read_image(tmp_path / "a16.png")
    assert (axes, pixels.dtype) == ("yx", np.uint16) and np.array_equal(pixels, field)
    pixels, axes = read_image(tmp_path / "a8.png")
    assert (axes, pixels.dtype, pixels.shape) == ("yx", np.uint8, (90, 120))
    assert read_image(tmp_path / "rgb.png")[0].shape == (3, 90, 120) and read_image(tmp_path / "rgb.png")[1] == "cyx"
    pixels, axes = read_image(tmp_path / "z.tif")
    assert axes == "zyx" and np.array_equal(pixels[1], field // 2)
    assert read_image(tmp_path / "c.tif")[1] == "cyx"
    assert read_image(tmp_path / "plain.tif")[1] == "yx"


@pytest.mark.parametrize("case", ["truncated", "not_image", "one_d", "suffix", "missing"])
def test_bad_images_get_one_line(tmp_path, case):
    path = tmp_path / "bad.png"
    if case == "truncated":
        Image.fromarray(synthetic_field((90, 120), seed=2)).save(path)
        path.write_bytes(path.read_bytes()[:200])
    elif case == "not_image":
        path.write_text("hello")
    elif case == "one_d":
        path = tmp_path / "bad.tif"
        tifffile.imwrite(path, np.arange(50, dtype=np.uint16))
    elif case == "suffix":
        path = tmp_path / "bad.jpg"
        path.write_bytes(b"x")
    with pytest.raises(UserError) as err:
        read_image(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("compression, code", [
    ("lzw", "LZW"),  # ImageJ's and many microscopes' default: needs imagecodecs, part of the imaging extra
    ("adobe_deflate", "ADOBE_DEFLATE"),
    ("zstd", "ZSTD"),
    (None, "NONE"),
])  # fmt: skip
def test_compressed_tiffs_are_read(tmp_path, compression, code):
    field = synthetic_field((90, 120), seed=3)
    tifffile.imwrite(tmp_path / "field.tif", field, compression=compression, predictor=compression == "lzw")
    with tifffile.TiffFile(tmp_path / "field.tif") as tif:
        assert tif.pages[0].compression == getattr(tifffile.COMPRESSION, code)
    pixels, axes = read_image(tmp_path / "field.tif")
    assert axes == "yx" and pixels.dtype == np.uint16 and np.array_equal(pixels, field)


def test_jpeg_tiff_is_read_within_its_loss(tmp_path):
    field = (synthetic_field((96, 128), seed=4) >> 8).astype(np.uint8)  # JPEG in TIFF: 8-bit
    tifffile.imwrite(tmp_path / "jpeg.tif", field, compression="jpeg", compressionargs={"level": 95})
    with tifffile.TiffFile(tmp_path / "jpeg.tif") as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.JPEG
    pixels, axes = read_image(tmp_path / "jpeg.tif")
    assert axes == "yx" and pixels.dtype == np.uint8 and pixels.shape == field.shape
    assert np.abs(pixels.astype(int) - field).mean() < 2


def test_bigtiff_and_ome_tiff_axes_are_read(tmp_path):
    stack = np.stack([synthetic_field((64, 80), seed=s) for s in range(6)]).reshape(2, 3, 64, 80)  # c, z, y, x
    tifffile.imwrite(tmp_path / "big.tif", stack[0, 0], bigtiff=True, compression="zlib")
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.is_bigtiff
    pixels, axes = read_image(tmp_path / "big.tif")
    assert axes == "yx" and np.array_equal(pixels, stack[0, 0])
    # OME-TIFF written z-first: its own OME-XML names the axes, read back in NGFF order (c, z, y, x)
    tifffile.imwrite(tmp_path / "stack.ome.tif", np.transpose(stack, (1, 0, 2, 3)), metadata={"axes": "ZCYX"},
                     compression="lzw")  # fmt: skip
    with tifffile.TiffFile(tmp_path / "stack.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].axes == "ZCYX"
    pixels, axes = read_image(tmp_path / "stack.ome.tif")
    assert axes == "czyx" and np.array_equal(pixels, stack)


def test_png_beyond_pils_decompression_bomb_limit_is_read(tmp_path):
    """13,400 x 13,400 (180 Mpx, above the 179 Mpx where PIL refuses; 180 MB decoded, a 250 kB file): read
    whole, without PIL's warning, into one writable array."""
    import warnings

    side = 13_400
    Image.MAX_IMAGE_PIXELS = None  # to write it
    image = np.zeros((side, side), np.uint8)
    image[123, 4567] = 200
    Image.fromarray(image).save(tmp_path / "big.png")
    del image
    Image.MAX_IMAGE_PIXELS = 89_478_485  # PIL's default, as in a fresh process
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels, axes = read_image(tmp_path / "big.png")
    assert axes == "yx" and pixels.shape == (side, side) and pixels.flags.writeable
    assert pixels[123, 4567] == 200 and int(pixels.sum(dtype=np.int64)) == 200


def test_image_larger_than_memory_is_refused_before_reading(tmp_path):
    """A 200-byte PNG may claim a million by a million pixels: refused from its header, not by the OOM killer."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1_000_000, 1_000_000, 8, 0, 0, 0, 0)  # 8-bit grey
    (tmp_path / "claim.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                                         + chunk(b"IDAT", zlib.compress(bytes(100))) + chunk(b"IEND", b""))  # fmt: skip
    with pytest.raises(UserError, match=r"claim\.png: 1000000 x 1000000 x 1 uint8 values need 931\.3 GiB decoded"):
        read_image(tmp_path / "claim.png")


def test_ingest_writes_ngff_multiscales_in_chunks(tmp_path):
    stack = np.stack([synthetic_field((300, 200), seed=s) for s in (3, 4)])
    tifffile.imwrite(tmp_path / "z.tif", stack, metadata={"axes": "ZYX"})
    out = ingest(tmp_path / "z.tif", tmp_path / "z.ome.zarr", chunks=128, levels=3, scale={"y": 0.5, "x": 0.5})
    meta = json.loads((out / "zarr.json").read_text())["attributes"]["ome"]
    assert meta["version"] == "0.5"
    ms = meta["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert [a["type"] for a in ms["axes"]] == ["space"] * 3
    assert [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]] == [[1, 0.5, 0.5], [1, 1, 1], [1, 2, 2]]
    levels, axes, _ = open_ome_zarr(out)
    assert axes == "zyx" and [lv.shape for lv in levels] == [(2, 300, 200), (2, 150, 100), (2, 75, 50)]
    assert levels[0].dtype == np.uint16 and np.array_equal(levels[0].compute(), stack)
    assert len(list((out / "0" / "c").rglob("*"))) > 4  # several chunks on disk
    assert not list(tmp_path.glob("*.tmp-*"))
    with pytest.raises(UserError, match="already exists"):
        ingest(tmp_path / "z.tif", out)


def test_reads_ngff_04(tmp_path):
    import zarr

    group = zarr.open_group(str(tmp_path / "v04.zarr"), mode="w", zarr_format=2)
    group.create_array("0", data=np.arange(2 * 90 * 100, dtype=np.uint8).reshape(2, 90, 100), chunks=(1, 50, 50))
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "c", "type": "channel"}, {"name": "y"}, {"name": "x"}],
                                   "datasets": [{"path": "0"}]}]  # fmt: skip
    levels, axes, _ = open_ome_zarr(tmp_path / "v04.zarr")
    assert axes == "cyx" and levels[0].shape == (2, 90, 100)
    group.attrs["multiscales"] = []
    with pytest.raises(UserError, match="not an OME-Zarr image"):
        open_ome_zarr(tmp_path / "v04.zarr")


def test_failed_write_leaves_nothing(tmp_path):
    import dask.array as da

    def boom(block):
        raise RuntimeError("disk full")

    image = da.zeros((200, 200), chunks=100, dtype=np.uint8).map_blocks(boom, dtype=np.uint8)
    with pytest.raises(RuntimeError):
        OmeZarrWriter(tmp_path / "x.ome.zarr", "yx", chunks=100).write(image)
    assert list(tmp_path.iterdir()) == []


def test_tiled_scoring_matches_whole_plane(tiny_scorer):
    import dask.array as da

    plane = synthetic_field((5 * PATCH + 20, 3 * PATCH + 7), seed=5).astype(np.float32)
    plane[:PATCH, :PATCH] = 7  # a constant patch: no content
    tiled = score_plane(da.from_array(plane, chunks=100), tiny_scorer, block=2)
    assert tiled.numblocks[:2] == (3, 2)  # several blocks, unaligned input chunks
    probs = tiled.compute()
    direct = tiny_scorer(to_patches(plane).reshape(-1, PATCH, PATCH)).reshape(5, 3, -1)
    assert probs.shape == (5, 3, 11)
    np.testing.assert_allclose(probs.reshape(-1, 11)[1:], direct.reshape(-1, 11)[1:], atol=1e-5)
    assert certainty(probs[0, 0]) == pytest.approx(0.0, abs=1e-6)


class BoxSum:
    """A per-pixel model with context: each pixel's (2 margin + 1)^2 neighbourhood summed, per channel, and the
    channels' product as a second output (so mixed-up channels, offsets or mirrors all show)."""

    margin = 6

    def __init__(self):
        self.calls = []

    def channels(self):
        return ["sum0", "sum1", "product"]

    def __call__(self, block):
        self.calls.append(block.shape)
        m, (h, w, _) = self.margin, block.shape
        win = np.lib.stride_tricks.sliding_window_view(block, (2 * m + 1, 2 * m + 1), axis=(0, 1))
        sums = win.sum(axis=(-2, -1))
        return np.concatenate([sums, sums[..., :1] * sums[..., 1:2]], axis=-1).reshape(h - 2 * m, w - 2 * m, 3)


def test_windowed_prediction_matches_the_whole_mirrored_image():
    import dask.array as da

    rng = np.random.default_rng(3)
    # remainders: 101 = 6 x 16 + 5 (narrower than the margin: joined to the last tile), 70 = 4 x 16 + 6 (a tile)
    image = rng.random((2, 101, 70)).astype(np.float32)
    source = da.from_array(image, chunks=(1, 40, 40))  # source chunks that align with neither tiles nor windows
    model = BoxSum()
    lazy = predict_lazily(source, model, tile=16, window=2)
    assert lazy.shape == (3, 101, 70) and lazy.numblocks == (1, 3, 3)
    # one task per window and none of the source's: nothing rechunks it, each window reads what it touches
    assert len(dict(lazy.__dask_graph__())) == 9
    tiled = lazy.compute(scheduler="threads", num_workers=2)
    whole = BoxSum()(np.moveaxis(np.pad(image, ((0, 0), (6, 6), (6, 6)), mode="symmetric"), 0, -1))
    np.testing.assert_allclose(tiled, np.moveaxis(whole, -1, 0), rtol=1e-5)
    # a tile with its context is 16 + 2 x 6 px; the last rows' tile 5 px more, the last columns' 6 + 2 x 6
    assert sorted({c[:2] for c in model.calls}) == [(28, 18), (28, 28), (33, 18), (33, 28)]


def test_focus_cli_images_and_bad_inputs(tiny_model_dir, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    field = synthetic_field((2 * PATCH + 10, 3 * PATCH), seed=6)
    Image.fromarray(field).save(images / "sixteen.png")
    Image.fromarray((field // 8).clip(0, 255).astype(np.uint8)).save(images / "eight.png")
    Image.fromarray(np.zeros((PATCH, 2 * PATCH), np.uint8)).save(images / "black.png")
    tifffile.imwrite(images / "stack.tif", np.stack([field, field]), metadata={"axes": "ZYX"})
    out = tmp_path / "focus"
    assert (
        main(["focus", "--images", str(images), "--model", str(tiny_model_dir), "--out", str(out), "--threads", "1"])
        == 0
    )
    per_image = pd.read_csv(out / "images.csv")
    assert len(per_image) == 5  # black, eight, sixteen, and the two planes of the stack
    black = per_image[per_image.image.str.endswith("black.png")].iloc[0]
    assert black.status == "no_content" and pd.isna(black.level)
    ok = per_image[per_image.status == "ok"]
    assert len(ok) == 4 and ok.level.between(0, 10).all() and ok.certainty.between(0, 1).all()
    assert set(per_image.plane.dropna()) == {"z=0", "z=1"}
    patches = pd.read_csv(out / "patches.csv")
    assert len(patches) == 2 + 4 * 6 and np.allclose(patches[[f"p{k}" for k in range(11)]].sum(axis=1), 1, atol=1e-3)
    montages = sorted(p.name for p in (out / "montages").iterdir())
    assert montages == ["black.png", "eight.png", "sixteen.png", "stack_z_0.png", "stack_z_1.png"]
    montage = np.asarray(Image.open(out / "montages" / "sixteen.png"))
    key = legend(11)
    assert montage.shape == (field.shape[0] + key.shape[0], max(field.shape[1], key.shape[1]), 3)
    assert (montage[0, 0] != montage[0, 0, 0]).any()  # a coloured border
    assert np.array_equal(montage[field.shape[0]:, : key.shape[1]], key)  # the legend under the plane

    # Existing output, a truncated image, too small, wrong dimensions: one line each, nothing written.
    capsys.readouterr()
    assert (
        main(["focus", "--images", str(images / "eight.png"), "--model", str(tiny_model_dir), "--out", str(out)]) == 2
    )
    assert "already exists" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(field).save(bad / "cut.png")
    (bad / "cut.png").write_bytes((bad / "cut.png").read_bytes()[:300])
    Image.fromarray(field[:50]).save(tmp_path / "small.png")
    tifffile.imwrite(tmp_path / "flat.tif", np.arange(200, dtype=np.uint16))
    for image, message in ((bad / "cut.png", "unreadable or truncated"), (tmp_path / "small.png", "smaller than one"),
                           (tmp_path / "flat.tif", "needs y and x")):  # fmt: skip
        target = tmp_path / f"out-{image.stem}"
        assert main(["focus", "--images", str(image), "--model", str(tiny_model_dir), "--out", str(target)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and str(image) in err[0]
        assert not target.exists() and not list(tmp_path.glob("out-*.tmp-*"))


def test_focus_cli_ome_zarr_writes_predictions(tiny_model_dir, tmp_path):
    field = synthetic_field((3 * PATCH, 4 * PATCH + 30), seed=8)
    tifffile.imwrite(tmp_path / "two.tif", np.stack([field, field // 2]), metadata={"axes": "CYX"})
    ingest(tmp_path / "two.tif", tmp_path / "two.ome.zarr", chunks=100, levels=2, scale={"y": 0.65, "x": 0.65})
    out = tmp_path / "focus"
    assert main(["focus", "--images", str(tmp_path / "two.ome.zarr"), "--model", str(tiny_model_dir), "--out", str(out),
                 "--channel", "1"]) == 0  # fmt: skip
    levels, axes, ms = open_ome_zarr(out / "predictions" / "two.ome.zarr")
    assert axes == "cyx" and levels[0].shape == (13, 3, 4)
    transforms = ms["datasets"][0]["coordinateTransformations"]
    assert transforms[0]["scale"] == pytest.approx([1, 0.65 * PATCH, 0.65 * PATCH])
    patches = pd.read_csv(out / "patches.csv")
    stored = levels[0].compute()
    np.testing.assert_allclose(stored[1].ravel(), patches.certainty, atol=1e-4)
    assert np.array_equal(stored[0].ravel(), patches.level)


@pytest.mark.workflow
def test_imaging_focus_target(tiny_model_dir, tmp_path, repo_root):
    """The Snakemake target on two tiny images: ingest each into OME-Zarr, then rate them."""
    import os
    import subprocess
    import sys

    import yaml

    for seed in (1, 2):
        Image.fromarray(synthetic_field((2 * PATCH, 2 * PATCH), seed=seed)).save(tmp_path / f"f{seed}.png")
    config = tmp_path / "imaging.yaml"
    config.write_text(yaml.safe_dump({"imaging": {"batch": "tiny", "images": [str(tmp_path / "f*.png")],
                                                  "model": str(tiny_model_dir), "chunks": 100, "levels": 2}}))  # fmt: skip
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo_root / "Snakefile"), "--configfile",
                          str(config), "--cores", "1", "imaging_focus"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "results" / "imaging" / "tiny"
    assert sorted(p.name for p in (out / "images").iterdir()) == ["f1.ome.zarr", "f2.ome.zarr"]
    images = pd.read_csv(out / "focus" / "images.csv")
    assert list(images.status) == ["ok", "ok"] and len(list((out / "focus" / "predictions").iterdir())) == 2
    assert (tmp_path / "logs" / "imaging" / "tiny" / "focus.log").exists()
