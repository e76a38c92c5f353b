"""Images: valid files that must be ACCEPTED (17e an LZW-compressed TIFF, 17f a PNG past PIL's decompression-bomb
limit) with the right pixels, and bad ones that must be refused (truncated, not an image, zero-size axes)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hostile_cases import ACCEPTED, Case, check_case, params

UNREADABLE = "truncat|corrupt|unreadable|damaged|incomplete|cannot read|not a PNG|not a valid|invalid|cannot identify"
INGEST = "ingest-image --image {image} --out {out}/image.ome.zarr"
INGEST_OUT = ("{out}/image.ome.zarr",)


def level0(store: Path) -> np.ndarray:
    import zarr

    return np.squeeze(zarr.open_group(str(store), mode="r")["0"][:])


# ---------------------------------------------------------------------------------------- valid, unusual images
def lzw_tiff(d, valid, work):
    """17e: a 16-bit TIFF with LZW compression and horizontal predictor (libtiff via PIL)."""
    from PIL import Image, TiffImagePlugin

    pixels = (np.arange(300 * 200, dtype=np.uint32).reshape(200, 300) * 37 % 65000).astype(np.uint16)
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[317] = 2  # predictor: horizontal differencing
    Image.fromarray(pixels).save(d / "lzw.tif", compression="tiff_lzw", tiffinfo=info)
    np.save(d / "expected.npy", pixels)
    return {"image": d / "lzw.tif"}


BOMB_SIDE = 13_500  # 182 M pixels: past PIL's 2 x MAX_IMAGE_PIXELS (179 M), where it refuses to decode


def write_big_png(path: Path, side: int = BOMB_SIDE) -> None:
    """An 8-bit greyscale PNG of side x side, pixel (y, x) = (x + y) % 251, streamed row by row (a few MB)."""
    x = np.arange(side, dtype=np.int64)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(6)
    parts = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))]
    data = []
    for y in range(side):
        data.append(z.compress(b"\x00" + ((x + y) % 251).astype(np.uint8).tobytes()))
    data.append(z.flush())
    parts += [chunk(b"IDAT", b"".join(data)), chunk(b"IEND", b"")]
    path.write_bytes(b"".join(parts))


def big_png(d, valid, work):
    write_big_png(d / "big.png")
    return {"image": d / "big.png"}


def lzw_pixels_kept(run, work, values):
    expected = np.load(work / "in" / "expected.npy")
    got = level0(work / "out" / "image.ome.zarr")
    assert got.shape == expected.shape and np.array_equal(got, expected), "accepted, but the pixels differ"


def big_pixels_kept(run, work, values):
    import zarr

    array = zarr.open_group(str(work / "out" / "image.ome.zarr"), mode="r")["0"]
    assert array.shape[-2:] == (BOMB_SIDE, BOMB_SIDE), f"accepted, but level 0 has shape {array.shape}"
    for y, x in [(0, 0), (1, 7), (BOMB_SIDE - 1, BOMB_SIDE - 1), (6000, 12345)]:
        value = int(np.asarray(array[(0,) * (array.ndim - 2) + (y, x)]))
        assert value == (x + y) % 251, f"accepted, but pixel ({y}, {x}) is {value}, not {(x + y) % 251}"


# ------------------------------------------------------------------------------------------------- bad images
def truncated_png(d, valid, work):
    data = valid.png.read_bytes()
    (d / "field.png").write_bytes(data[: int(len(data) * 0.6)])
    return {"image": d / "field.png"}


def text_as_png(d, valid, work):
    (d / "notes.png").write_text("these are my notes, not an image\n")
    return {"image": d / "notes.png"}


def empty_png(d, valid, work):
    (d / "empty.png").write_bytes(b"")
    return {"image": d / "empty.png"}


def zero_size_tiff(d, valid, work):
    """A TIFF whose image has a zero-length axis (tifffile writes it, as a 'nonconformant' file)."""
    import warnings

    import tifffile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tifffile.imwrite(d / "zero.tif", np.zeros((0, 64), dtype=np.uint16))
    return {"image": d / "zero.tif"}


def truncated_tiff(d, valid, work):
    data = valid.tif.read_bytes()
    (d / "field.tif").write_bytes(data[: int(len(data) * 0.5)])
    return {"image": d / "field.tif"}


CASES = [
    Case("17e-lzw-tiff-accepted", "ingest-image", INGEST, lzw_tiff, INGEST_OUT, expect=ACCEPTED,
         correct=lzw_pixels_kept),
    Case("17f-png-past-decompression-bomb-limit-accepted", "ingest-image", INGEST + " --levels 1 --chunks 4096",
         big_png, INGEST_OUT, expect=ACCEPTED, correct=big_pixels_kept, timeout=300,
         note="182 M pixels of 8 bits: about 0.2 GB decoded"),
    Case("own-truncated-png", "ingest-image", INGEST, truncated_png, INGEST_OUT, ("field.png",), (UNREADABLE,)),
    Case("own-text-file-named-png", "ingest-image", INGEST, text_as_png, INGEST_OUT, ("notes.png",), (UNREADABLE,)),
    Case("own-empty-png", "ingest-image", INGEST, empty_png, INGEST_OUT, ("empty.png",), (UNREADABLE + "|empty",)),
    Case("own-tiff-zero-size-axis", "ingest-image", INGEST, zero_size_tiff, INGEST_OUT, ("zero.tif",),
         ("empty|zero|no pixels|0 pixels|0 x|0x|size 0",), note="the line must say that the image has no pixels"),
    Case("own-truncated-tiff", "ingest-image", INGEST, truncated_tiff, INGEST_OUT, ("field.tif",), (UNREADABLE,)),
    Case("own-focus-truncated-png", "focus", "focus --images {image} --model {focus_model} --out {out}/focus",
         truncated_png, ("{out}/focus",), ("field.png",), (UNREADABLE,)),
]


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_image(case, valid, work):
    check_case(case, valid, work)
