"""Tiled inference with Dask: a 2-D plane of any size -> per-patch focus predictions, block by block.

The plane is cut into blocks of `block` x `block` patches; each block is read, split into non-overlapping
patches, scored by the jitted model in fixed-size batches and reduced to [rows, cols, levels]
probabilities. Only a few blocks (one per Dask thread) are in memory at a time, whatever the plane's size.
A constant patch (all one value: no content at all) gets a flat distribution, hence certainty 0, without
asking the model.
"""

from __future__ import annotations

import numpy as np

from deepflows.imaging.focus_model import PATCH, Scorer, certainty, to_patches


def score_block(block: np.ndarray, scorer: Scorer, patch: int = PATCH) -> np.ndarray:
    """[h, w] (multiples of patch) -> probabilities [h/patch, w/patch, levels] float32."""
    patches = to_patches(np.asarray(block, np.float32), patch)
    rows, cols = patches.shape[:2]
    flat = patches.reshape(rows * cols, patch, patch)
    probs = np.full((len(flat), scorer.levels), 1.0 / scorer.levels, np.float32)
    has_range = flat.max(axis=(1, 2)) > flat.min(axis=(1, 2))
    if has_range.any():
        probs[has_range] = scorer(flat[has_range])
    return probs.reshape(rows, cols, scorer.levels)


def score_plane(plane, scorer: Scorer, patch: int = PATCH, block: int = 16):
    """A Dask (or NumPy) plane [H, W] -> lazy probabilities [H // patch, W // patch, levels] (Dask)."""
    import dask.array as da

    plane = plane if isinstance(plane, da.Array) else da.from_array(np.asarray(plane))
    rows, cols = plane.shape[0] // patch, plane.shape[1] // patch
    plane = plane[: rows * patch, : cols * patch].rechunk((block * patch, block * patch))
    chunks = tuple(tuple(c // patch for c in axis) for axis in plane.chunks) + ((scorer.levels,),)
    return plane.map_blocks(score_block, scorer, patch, chunks=chunks, new_axis=2, dtype=np.float32)


def write_predictions(probs, out, pixel: tuple[float, float], attrs: dict, patch: int = PATCH) -> np.ndarray:
    """Lazy probabilities [rows, cols, levels] -> an OME-Zarr image [2 + levels, rows, cols] (channels: predicted
    level, certainty, then the probability of each level), streamed block by block, so memory stays bounded;
    scaled and shifted so that each value lies over its patch's centre in the source image's coordinates.
    Returns the probabilities (small: one row per patch), read back from the store."""
    import dask.array as da

    from deepflows.imaging.io import OmeZarrWriter, open_ome_zarr

    levels = probs.shape[-1]
    level = da.argmax(probs, axis=-1).astype(np.float32)
    cert = probs.map_blocks(lambda p: certainty(p).astype(np.float32), drop_axis=2, dtype=np.float32)
    image = da.concatenate([level[None], cert[None], da.moveaxis(probs, -1, 0)], axis=0)
    shift = (patch - 1) / 2
    OmeZarrWriter(out, "cyx", chunks=256, channel_names=["level", "certainty"] + [f"p{k}" for k in range(levels)],
                  scale={"y": pixel[0] * patch, "x": pixel[1] * patch},
                  translation={"y": pixel[0] * shift, "x": pixel[1] * shift}, attrs=attrs).write(image)  # fmt: skip
    return np.moveaxis(np.asarray(open_ome_zarr(out)[0][0][2:]), 0, -1)
