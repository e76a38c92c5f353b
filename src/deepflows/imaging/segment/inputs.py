"""What a segmentation model reads: any image as raw pixels [H, W, C], and its scaling to [0, 1].

`read_input` opens PNG, TIFF (z-stacks and multi-channel too), Aperio SVS (the baseline level), OME-Zarr images and
In Silico Labeling wells as a Dask array [H, W, C]: z planes and channels both become C (a 13-plane
phase-contrast stack is 13 input channels), so a slide of any size is read block by block.

The scaling (`input_normalization`, recorded in a task store and in every model trained on it) is one of:
- `percentiles`: (raw - low) / (high - low) clipped to [0, 1], low and high the image's own 0.5th and 99.9th
  percentiles, per channel or one pair for all (`joint`: the planes of a z-stack). Stains vary in brightness
  between fields, so each image is stretched by itself, as a microscope's display does. Of a large image the
  percentiles are of a regular subsample of at most ~16 M pixels (exact below that).
- `scale`: raw / divide_by (H&E: colours mean the same on every slide, and a field of glass must stay glass).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepflows.errors import UserError
from deepflows.imaging.isl import normalization

STACK_INPUT = {"kind": "percentiles", "percentiles": [0.5, 99.9], "joint": True}
FIELD_INPUT = {"kind": "percentiles", "percentiles": [0.5, 99.9], "joint": False}
RGB_INPUT = {"kind": "scale", "divide_by": 255}
SAMPLE_PIXELS = 16_000_000


def scaling(raw, spec: dict) -> list[dict]:
    """The normalisation ({low, high, percentiles}, deepflows.imaging.isl.normalization) of each channel of a raw
    image [H, W, C] (NumPy or Dask) under `spec`; percentiles of the raw pixels as stored."""
    channels = raw.shape[-1]
    if spec["kind"] == "scale":
        return [{"low": 0.0, "high": float(spec["divide_by"])}] * channels
    step = max(1, int(np.ceil(np.sqrt(raw.shape[0] * raw.shape[1] / SAMPLE_PIXELS))))
    sample = np.asarray(raw[::step, ::step])
    percentiles = spec.get("percentiles", [0.5, 99.9])
    if spec.get("joint"):
        return [normalization(sample, percentiles)] * channels
    return [normalization(sample[..., c], percentiles) for c in range(channels)]


def apply_scaling(raw: np.ndarray, norms: list[dict]) -> np.ndarray:
    """float32 [H, W, C] in [0, 1] of raw pixels [H, W, C]: each channel normalised by its `norms` entry
    (deepflows.imaging.isl.normalize, the same float32 arithmetic) and clipped."""
    low = np.asarray([n["low"] for n in norms], np.float32)
    span = np.asarray([np.float32(n["high"] - n["low"]) for n in norms], np.float32)
    return np.clip((np.asarray(raw, np.float32) - low) / span, 0, 1)


def normalise_input(raw: np.ndarray, spec: dict) -> np.ndarray:
    """float32 [H, W, C] in [0, 1] of a raw [H, W] or [H, W, C] image, scaled as `spec` says."""
    raw = np.asarray(raw)
    raw = raw[..., None] if raw.ndim == 2 else raw
    return apply_scaling(raw, scaling(raw, spec))


def read_input(path: str | Path):
    """A Dask array [H, W, C] of the raw pixels of an image file or store (see the module doc)."""
    import dask.array as da

    from deepflows.imaging.io import open_ome_zarr, read_image
    from deepflows.imaging.isl.well import is_well, open_well

    path = Path(path)
    if path.is_dir():
        if is_well(path):
            return da.moveaxis(open_well(path).stack, 0, -1)
        levels, axes, _ = open_ome_zarr(path)
        pixels = levels[0]
    elif path.suffix.lower() == ".svs":
        pixels, axes = _read_svs(path), "cyx"
    else:
        pixels, axes = read_image(path)
        if axes == "yxc":  # PNG colour
            pixels, axes = np.moveaxis(pixels, -1, 0), "cyx"
    if "t" in axes:
        if pixels.shape[0] != 1:
            raise UserError(f"{path}: {pixels.shape[0]} time points; segment one at a time")
        pixels, axes = pixels[0], axes[1:]
    if not axes.endswith("yx"):
        raise UserError(f"{path}: an image needs y and x axes; this one has '{axes}'")
    pixels = pixels.reshape(-1, *pixels.shape[-2:])  # channels and planes together
    array = pixels if isinstance(pixels, da.Array) else da.from_array(pixels, chunks=(-1, 1024, 1024))
    return da.moveaxis(array, 0, -1)


def read_slide(path: str | Path) -> tuple[np.ndarray, str]:
    """(pixels of a slide's baseline level as stored, [H, W, C] or [H, W]; its ImageDescription) of an Aperio
    SVS or any TIFF (tifffile; JPEG tiles need imagecodecs): the one reader of slides for segment, its H&E task
    and the AR microscope. A file it cannot read is one UserError naming it."""
    import tifffile

    from deepflows.inputs import require_file

    path = require_file(path, "slide")
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.series[0].levels[0].keyframe  # the baseline level's (first) page
            return page.asarray(), page.description or ""
    except Exception as err:  # noqa: BLE001 - tifffile and imagecodecs raise many types for foreign or damaged files
        raise UserError(f"{path}: not a readable SVS/TIFF slide ({type(err).__name__}: {err})") from None


def _read_svs(path: Path) -> np.ndarray:
    """[3, H, W] of an Aperio slide's baseline level."""
    pixels, _ = read_slide(path)
    if pixels.ndim != 3 or pixels.shape[-1] not in (3, 4):
        raise UserError(f"{path}: expected an RGB slide, not shape {pixels.shape}")
    return np.moveaxis(pixels[..., :3], -1, 0)
