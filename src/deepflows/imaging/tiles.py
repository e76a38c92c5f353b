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


def padded_side(h: int, w: int, tile: int, margin: int, multiple: int = 1) -> int:
    """The side a block [h, w] (a tile with `margin` px of context on each side) is padded to before prediction:
    one of two fixed shapes, so a model compiles at most twice: the tile's own, and the image's last tiles', which
    may be wider by a remainder narrower than the margin (tile_chunks). Rounded up to a `multiple` of pixels."""
    side = tile + 2 * margin if max(h, w) <= tile + 2 * margin else tile + 3 * margin
    return -(-side // multiple) * multiple


def tile_windows(chunks: tuple[int, ...], window: int) -> tuple[int, ...]:
    """Runs of `window` consecutive tile chunks, summed: the sides of the windows one Dask task predicts."""
    return tuple(sum(chunks[i : i + window]) for i in range(0, len(chunks), window))


class _WindowPredictor:
    """The block function of `predict_lazily`: one window of tiles read straight from the source image (with the
    margin around it, mirrored at the image's edges) and predicted tile by tile. The source is held here, not
    passed to Dask as an input, so no task ever rechunks it: each window reads only the source chunks it
    touches, and memory stays bounded by a few windows whatever the image's width."""

    def __init__(self, stack, predictor, rows: tuple[int, ...], cols: tuple[int, ...]):
        self.stack, self.predictor = stack, predictor
        self.rows, self.cols = np.cumsum((0,) + rows), np.cumsum((0,) + cols)  # tile edges in pixels

    def __dask_tokenize__(self):  # the graph's key: the source's, not a hash of the model's weights
        return type(self).__name__, self.stack.name, id(self.predictor), tuple(self.rows), tuple(self.cols)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The source [y0 - m, y1 + m) x [x0 - m, x1 + m) as [h, w, channels] float32, mirrored (as numpy's
        "symmetric" pad, Dask's "reflect" boundary) where it runs past the image."""
        m, (_, height, width) = self.predictor.margin, self.stack.shape
        top, bottom, left, right = max(0, y0 - m), min(height, y1 + m), max(0, x0 - m), min(width, x1 + m)
        block = np.asarray(self.stack[:, top:bottom, left:right].compute(scheduler="sync"), np.float32)
        pad = ((0, 0), (top - (y0 - m), y1 + m - bottom), (left - (x0 - m), x1 + m - right))
        return np.moveaxis(np.pad(block, pad, mode="symmetric") if any(map(any, pad)) else block, 0, -1)

    def __call__(self, block_info=None) -> np.ndarray:
        (_, _), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        m, source = self.predictor.margin, self.read(y0, y1, x0, x1)
        out = np.empty((len(self.predictor.channels()), y1 - y0, x1 - x0), np.float32)
        ys = [int(y) for y in self.rows if y0 <= y <= y1]
        xs = [int(x) for x in self.cols if x0 <= x <= x1]
        for top, bottom in zip(ys, ys[1:]):
            for left, right in zip(xs, xs[1:]):
                tile = source[top - y0 : bottom - y0 + 2 * m, left - x0 : right - x0 + 2 * m]
                out[:, top - y0 : bottom - y0, left - x0 : right - x0] = np.moveaxis(self.predictor(tile), -1, 0)
        return out


def predict_lazily(stack, predictor, tile: int, window: int = 4):
    """A Dask image [channels in, y, x] -> lazy predictions [channels out, y, x] (float32): `predictor` is called on
    each block [h, w, channels in] with `predictor.margin` pixels of mirrored context around it and returns the
    centre's predictions [h - 2 margin, w - 2 margin, len(predictor.channels())] (In Silico Labeling, segmentation).
    One Dask task predicts a window of `window` x `window` tiles, reading its input from `stack` itself (see
    _WindowPredictor), so memory is bounded by the windows in flight, not by the image's width (isl-predict: 1.6 GB
    at 20,000 x 20,000 x 13 planes, 0.9 GB for a 1,024 x 1,024 well)."""
    import dask.array as da

    _, height, width = stack.shape
    rows, cols = tile_chunks(height, tile, predictor.margin), tile_chunks(width, tile, predictor.margin)
    chunks = ((len(predictor.channels()),), tile_windows(rows, window), tile_windows(cols, window))
    return da.map_blocks(_WindowPredictor(stack, predictor, rows, cols), chunks=chunks, dtype=np.float32,
                         meta=np.empty((0, 0, 0), np.float32))  # fmt: skip
