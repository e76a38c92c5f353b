"""Tiled inference with Dask: images of any size predicted block by block (focus patches; per-pixel models with
context around each block: `predict_lazily`).

Focus: the plane is cut into blocks of `block` x `block` patches; each block is read, split into non-overlapping
patches, scored by the jitted model in fixed-size batches and reduced to [rows, cols, levels]
probabilities. Only a few blocks (one per Dask thread) are in memory at a time, whatever the plane's size.
A constant patch (all one value: no content at all) gets a flat distribution, hence certainty 0, without
asking the model.
"""

from __future__ import annotations

import numpy as np

from deepflows.errors import UserError
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


def tile_chunks(size: int, tile: int, margin: int) -> tuple[int, ...]:
    """Chunks of `tile` along an axis of `size`, a remainder narrower than `margin` joined to the last tile
    (Dask's mirrored overlap needs every chunk at least as wide as the overlap)."""
    if size < margin:
        raise UserError(f"the image is {size} px wide; the model reads {margin} px of context on each side")
    chunks = [tile] * (size // tile)
    rest = size - sum(chunks)
    if rest and (rest >= margin or not chunks):
        chunks.append(rest)
    elif rest:
        chunks[-1] += rest
    return tuple(chunks)


def predict_lazily(stack, predictor, tile: int):
    """A Dask image [channels in, y, x] -> lazy predictions [channels out, y, x] (float32): `predictor` is called on
    each block [h, w, channels in] with `predictor.margin` pixels of mirrored context around it and returns the
    centre's predictions [h - 2 margin, w - 2 margin, len(predictor.channels())] (In Silico Labeling, segmentation)."""
    import dask.array as da

    m = predictor.margin
    x = da.moveaxis(stack.astype(np.float32), 0, -1)
    x = x.rechunk((tile_chunks(x.shape[0], tile, m), tile_chunks(x.shape[1], tile, m), -1))
    if m:  # mirrored context at the image's edges
        x = da.overlap.overlap(x, depth={0: m, 1: m, 2: 0}, boundary={0: "reflect", 1: "reflect", 2: "none"})
    channels = len(predictor.channels())
    chunks = (tuple(c - 2 * m for c in x.chunks[0]), tuple(c - 2 * m for c in x.chunks[1]), (channels,))
    out = x.map_blocks(predictor, chunks=chunks, dtype=np.float32)
    return da.moveaxis(out, -1, 0)
