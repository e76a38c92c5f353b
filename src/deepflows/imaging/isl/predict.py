"""`deepflows isl-predict`: fluorescent labels predicted for a whole transmitted-light z-stack of any size.

    deepflows isl-predict --stack WELL.ome.zarr|STACK.ome.zarr|STACK.tif --model resources/models/isl-neurons
                          --out PRED.ome.zarr [--tile 256] [--statistics mean,median,q05,q25,q75,q95,entropy]
                          [--threads N] [--tta]

The stack is normalised as in training (its planes' 0.5th and 99.9th percentiles: an ISL well's recorded
ones, computed for any other stack) and predicted tile by tile with Dask: each `--tile` x `--tile` block is
read with --context pixels around it (mirrored at the image's edges), padded to a fixed
shape (two compilations at most), predicted, and only its centre kept, so tiles join without seams. Each
Dask task predicts a window of 4 x 4 tiles read straight from the stack, so memory stays bounded by a few
windows per thread whatever the image's size (deepflows.imaging.tiles.predict_lazily). With --tta each
tile is also seen rotated and flipped (the 8 symmetries of the square) and the 8 distributions are averaged
per pixel: on the real well's tune band this raised r for every label (DAPI 0.767 -> 0.799, MAP2 0.777 ->
0.807, NFH 0.492 -> 0.505, the shipped model), at 8x the time.

Writes a prediction store (deepflows.imaging.isl.prediction_store: an OME-Zarr image, cyx, float32, under a
temporary name renamed when complete): for each label and statistic a channel "<label> <statistic>", in
the label's normalised units (0 and 1 are the training well's percentiles, recorded in the attributes
with the model). Statistics of the per-pixel distribution
over 256 bins: mean, median and the 5/25/75/95% quantiles (linear within a bin), entropy (bits); the 90%
interval width q95 - q05 is the uncertainty map. An L2 model (isl_unet) has only `mean`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from deepflows.arguments import positive_int
from deepflows.errors import UserError
from deepflows.imaging.isl import BINS, bin_centres
from deepflows.imaging.isl.prediction_store import STATISTICS
from deepflows.imaging.tiles import padded_side
from deepflows.outputs import check_new_output

log = logging.getLogger("deepflows.isl_predict")
QUANTILES = {"median": 0.5, "q05": 0.05, "q25": 0.25, "q75": 0.75, "q95": 0.95}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stack", required=True, help="an ISL well or a z-stack (OME-Zarr, multi-page TIFF)")
    p.add_argument("--model", required=True, help="an isl-train model directory")
    p.add_argument("--out", required=True, help="the predictions (OME-Zarr) to write")
    p.add_argument("--tile", type=positive_int, default=256, help="tile side in pixels (default 256)")
    p.add_argument("--statistics", default=",".join(STATISTICS),
                   help=f"comma-separated, of {', '.join(STATISTICS)} (default: all)")  # fmt: skip
    p.add_argument("--context", type=positive_int, default=32,
                   help="pixels of context read around each tile (at least the model's training margin; default 32)")
    p.add_argument("--threads", type=positive_int, default=2, help="Dask threads (tiles predicted at once)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the model's distributions over the 8 rotations and flips "
                        "of each tile (8x the time; chosen on the tune band: higher r for every label)")  # fmt: skip


def distribution_statistics(p, wanted: tuple[str, ...]):
    """Probabilities [..., bins] (summing to 1) -> [..., len(wanted)] float32: each statistic of the distribution
    (JAX: it runs inside the jitted prediction, beside the model)."""
    import jax.numpy as jnp

    cdf = jnp.cumsum(p, axis=-1)
    out = []
    for name in wanted:
        if name == "mean":
            out.append(p @ jnp.asarray(bin_centres()))
        elif name == "entropy":
            out.append(-jnp.sum(p * jnp.log2(jnp.maximum(p, 1e-12)), axis=-1))
        else:  # the quantile, linear within the bin where the cumulative distribution reaches it
            q = QUANTILES[name]
            k = jnp.minimum(jnp.sum(cdf < q, axis=-1, keepdims=True), BINS - 1)
            below = jnp.where(k > 0, jnp.take_along_axis(cdf, jnp.maximum(k - 1, 0), -1), 0.0)
            mass = jnp.take_along_axis(p, k, -1)
            frac = jnp.clip((q - below) / jnp.maximum(mass, 1e-12), 0.0, 1.0)
            out.append(((k + frac) / BINS)[..., 0])
    return jnp.stack(out, axis=-1).astype(jnp.float32)


class Predictor:
    """A loaded model as a function of one normalised block [h, w, planes] (with the margin around) ->
    [h - 2 margin, w - 2 margin, labels x statistics], jitted for each padded block shape (at most two:
    deepflows.imaging.tiles.padded_side)."""

    def __init__(self, model, meta: dict, statistics: tuple[str, ...], tile: int, context: int = 0,
                 tta: bool = False):  # fmt: skip
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from deepflows.imaging.isl.patches import dihedral, undo_dihedral

        # more context than training's margin is still what training saw: its windows' centres had up to
        # (window - margin) pixels of real context on a side
        self.margin, self.statistics = max(int(meta["margin"]), int(context)), statistics
        self.labels = list(meta["labels"])
        self.distribution = bool(getattr(model, "distribution", False))
        self.tile, self.multiple = tile, int(getattr(model, "multiple", 1))
        # a pure function of the weights: Dask's threads call it at once, and NNX modules are not thread-safe
        graphdef, self.state = nnx.split(model)
        distribution, margin, self.tta = self.distribution, self.margin, bool(tta)
        # test-time augmentation: the block seen in each of the 8 symmetries of the square (the padded block is
        # square), each view's output turned back, and the views' distributions (a point model's values) averaged
        views = range(8) if tta else (0,)

        def forward(state, x):
            model = nnx.merge(graphdef, state)
            if not distribution:
                outs = [undo_dihedral(model(dihedral(x[0], k)[None], crop=margin)[0], k) for k in views]
                return (sum(outs) / len(outs))[None, ..., None]
            # the head and the statistics a block of rows at a time: a whole tile's logits would take
            # pixels x labels x 256 x 4 bytes (255 MB for a 256-px tile with its context), several times over
            features = jnp.stack([undo_dihedral(model.features(dihedral(x[0], k)[None], crop=margin)[0], k)
                                  for k in views])  # [views, rows, cols, head]  # fmt: skip
            rows = features.shape[1]
            block = next(b for b in (16, 8, 4, 2, 1) if rows % b == 0)
            parts = features.reshape(len(views), rows // block, block, *features.shape[2:]).swapaxes(0, 1)

            def statistics_of(f):  # [views, block, cols, head] -> [block, cols, labels, statistics]
                p = jax.nn.softmax(model.logits(f).astype(jnp.float32), axis=-1)
                return distribution_statistics(p.mean(axis=0), statistics)

            stats = jax.lax.map(statistics_of, parts)
            return stats.reshape(rows, *stats.shape[2:])[None]

        self.forward = jax.jit(forward)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        h, w, _ = block.shape
        side = padded_side(h, w, self.tile, self.margin, self.multiple)
        padded = np.pad(block, ((0, side - h), (0, side - w), (0, 0)), mode="reflect")
        stats = np.asarray(self.forward(self.state, padded[None].astype(np.float32))[0])
        stats = stats[: h - 2 * self.margin, : w - 2 * self.margin]  # [h, w, labels, statistics]
        return stats.reshape(*stats.shape[:2], -1)

    def channels(self) -> list[tuple[str, str]]:
        """(label, statistic) of each output channel, in order."""
        names = self.statistics if self.distribution else ("mean",)
        return [(label, name) for label in self.labels for name in names]


def run(args: argparse.Namespace) -> None:
    import dask

    from deepflows.imaging.isl import normalize
    from deepflows.imaging.isl.prediction_store import write_predictions
    from deepflows.imaging.isl.well import read_stack
    from deepflows.imaging.tiles import predict_lazily
    from deepflows.nn.model_dir import load_model

    statistics = tuple(s.strip() for s in args.statistics.split(",") if s.strip())
    unknown = [s for s in statistics if s not in STATISTICS]
    if unknown or not statistics:
        raise UserError(f"--statistics {args.statistics}: expected names among {', '.join(STATISTICS)}")
    model, meta = load_model(args.model)
    if meta.get("name") != "in-silico-labeling":
        raise UserError(f"{args.model}: not an In Silico Labeling model (model.json name {meta.get('name')!r})")
    stack, norm = read_stack(args.stack)
    planes = meta["input_shape"][-1]
    if stack.shape[0] != planes:
        raise UserError(f"{args.stack}: {stack.shape[0]} planes; the model reads {planes}")
    check_new_output(args.out)
    predictor = Predictor(model, meta, statistics, args.tile, args.context, tta=args.tta)
    lazy = predict_lazily(stack.map_blocks(normalize, norm, dtype=np.float32), predictor, args.tile)
    log.info("%s: %d planes x %d x %d -> %d channels in tiles of %d px", args.stack, planes, *stack.shape[1:],
             lazy.shape[0], args.tile)  # fmt: skip
    attrs = {"isl_model": {"path": str(args.model), "sha256": meta["sha256"], "stack": str(args.stack),
                           "input_normalization": norm, "target_normalization": meta.get("normalization"),
                           "tile": args.tile, "context": predictor.margin, "tta": predictor.tta}}  # fmt: skip
    with dask.config.set(scheduler="threads", num_workers=args.threads):
        write_predictions(args.out, lazy, predictor.channels(), str(args.model), attrs, chunks=args.tile)
    log.info("predictions -> %s", Path(args.out))
