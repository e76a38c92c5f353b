"""`deepflows isl-ridge`: the classical baseline of In Silico Labeling, ridge regression on multi-scale filtered
planes of the transmitted-light stack.

    deepflows isl-ridge --well WELL.ome.zarr --out RIDGE.ome.zarr [--test-quadrant bottom-right]
                        [--tune-band 96] [--sigmas 1,2,4,8,16] [--pixels 200000] [--seed 0]

Features, per pixel, from the normalised stack (z planes, scales s in --sigmas; `feature_names` lists them):
- each plane as it is and blurred by a Gaussian of each s (a linear model of these holds every linear
  filter built from them: the across-z mean, differences of Gaussians);
- the standard deviation across z of the planes at each scale (how much the pixel changes through focus);
- of the across-z mean image m at each s: the Gaussian gradient magnitude, the local standard deviation
  (sqrt(G_s(m^2) - G_s(m)^2)), and the two eigenvalues of the scale-normalised Hessian (blobs and ridges:
  nuclei and neurites); and the across-z standard deviation image blurred by G_s.

Fit and selection follow the spatial split (deepflows.imaging.isl.split_mask): the ridge is fitted on a seeded
random subsample of --pixels TRAIN pixels, its alpha chosen per label among `ALPHAS` by the Pearson r of the
TUNE pixels; the TEST quadrant is never read for either. A pixel's features see the stack up to
`feature_radius` pixels away, so only TRAIN and TUNE pixels at least that far from the test quadrant are
used: neither the targets nor the inputs of the test quadrant reach the fit. Targets are the labels'
normalised intensities clipped to [0, 1]; features are standardised on the training sample.

The whole image is then predicted, in blocks of rows (each with its halo of `feature_radius` rows, so blocks
give exactly the whole image's features) that keep memory bounded for any image height, and written as a
prediction store (deepflows.imaging.isl.prediction_store) with one `<LABEL> mean` channel per label, clipped
to [0, 1]. Its attributes `deepflows.ridge` record the alphas tried and chosen, the tune r of each, the
features, the split, the pixels used and the fitted weights.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepflows.arguments import positive_int, seed
from deepflows.errors import UserError
from deepflows.imaging.isl import INPUT_CHANNEL, QUADRANTS, TEST, TRAIN, TUNE, normalize, split_mask

log = logging.getLogger("deepflows.isl.ridge")

DEFAULT_SIGMAS = (1.0, 2.0, 4.0, 8.0, 16.0)
ALPHAS = tuple(10.0**k for k in range(-5, 2))  # on standardised features: 1e-5 .. 10
TRUNCATE = 4.0  # Gaussian kernels reach TRUNCATE * sigma
BLOCK_BYTES = 128 << 20  # the features of one block of rows


# ----------------------------------------------------------------------------- the well


def load_well(path: str | Path):
    """(stack [z, y, x] raw, targets [labels, y, x] raw, labels, normalization) of a well store: the one
    place this package's evaluation and baselines read a well (deepflows.imaging.isl.well.open_well)."""
    from deepflows.imaging.isl.well import open_well

    well = open_well(path)
    labels = tuple(well.labels)
    missing = [c for c in (INPUT_CHANNEL, *labels) if c not in well.normalization]
    if missing:
        raise UserError(f"{path}: the well records no normalisation for {', '.join(missing)}")
    return well.stack, well.targets, labels, well.normalization


def target(raw, norm: dict) -> np.ndarray:
    """A label's raw intensities -> normalised, clipped to [0, 1] (float32)."""
    return np.clip(normalize(raw, norm), 0.0, 1.0)


# ----------------------------------------------------------------------------- features


def feature_radius(sigmas) -> int:
    """How far (pixels) a feature reaches: scipy's kernel radius for the largest sigma."""
    return int(TRUNCATE * max(sigmas) + 0.5)


def feature_names(planes: int, sigmas) -> list[str]:
    scales = ["raw"] + [f"G{s:g}" for s in sigmas]
    names = [f"z{z} {scale}" for scale in scales for z in range(planes)]
    names += [f"z-std {scale}" for scale in scales]
    for s in sigmas:
        names += [f"mean gradient G{s:g}", f"mean local std G{s:g}", f"mean Hessian max G{s:g}",
                  f"mean Hessian min G{s:g}", f"z-std G{s:g}"]  # fmt: skip
    return names


def features(stack: np.ndarray, sigmas) -> np.ndarray:
    """Normalised stack [z, h, w] -> features [F, h, w] float32, in the order of `feature_names`."""
    from scipy import ndimage as ndi

    stack = np.asarray(stack, np.float32)
    z, h, w = stack.shape
    scales = len(sigmas) + 1
    out = np.empty((len(feature_names(z, sigmas)), h, w), np.float32)
    out[:z] = stack
    for k, s in enumerate(sigmas, 1):
        for i in range(z):
            ndi.gaussian_filter(stack[i], s, truncate=TRUNCATE, output=out[k * z + i])
    for k in range(scales):
        out[scales * z + k] = out[k * z : (k + 1) * z].std(axis=0)
    m, d = stack.mean(axis=0), stack.std(axis=0)
    i = scales * (z + 1)
    for k, s in enumerate(sigmas, 1):
        g = lambda image, order=0: ndi.gaussian_filter(image, s, order=order, truncate=TRUNCATE)  # noqa: E731
        blurred_mean = out[k * z : (k + 1) * z].mean(axis=0)
        out[i] = ndi.gaussian_gradient_magnitude(m, s, truncate=TRUNCATE)
        out[i + 1] = np.sqrt(np.maximum(g(m * m) - blurred_mean**2, 0.0))
        hyy, hxx, hxy = (g(m, order) * s**2 for order in ((2, 0), (0, 2), (1, 1)))
        half_trace, disc = (hxx + hyy) / 2, np.sqrt(((hxx - hyy) / 2) ** 2 + hxy**2)
        out[i + 2], out[i + 3] = half_trace + disc, half_trace - disc
        out[i + 4] = g(d)
        i += 5
    return out


def row_blocks(height: int, width: int, n_features: int, budget: int = BLOCK_BYTES) -> list[tuple[int, int]]:
    """[y0, y1) blocks of rows whose features take about `budget` bytes."""
    rows = int(np.clip(budget // max(1, n_features * width * 4), 16, height))
    return [(y0, min(height, y0 + rows)) for y0 in range(0, height, rows)]


def block_features(stack, norm: dict, y0: int, y1: int, sigmas) -> np.ndarray:
    """Features [F, y1 - y0, x] of rows y0..y1 of the raw `stack` (NumPy or Dask [z, y, x]), computed with a
    halo of `feature_radius` rows: the same values as the whole image's features."""
    radius = feature_radius(sigmas)
    a, b = max(0, y0 - radius), min(stack.shape[1], y1 + radius)
    planes = normalize(np.asarray(stack[:, a:b, :]), norm)
    return features(planes, sigmas)[:, y0 - a : y1 - a]


# ----------------------------------------------------------------------------- fit


def fit_pixels(mask: np.ndarray, split: int, radius: int) -> np.ndarray:
    """[y, x] bool: the pixels of `split` whose feature window (radius `radius`) lies clear of TEST."""
    from scipy import ndimage as ndi

    near_test = ndi.maximum_filter((mask == TEST).astype(np.uint8), size=2 * radius + 1, mode="constant")
    return (mask == split) & (near_test == 0)


@dataclass
class Ridge:
    """A fitted ridge: per label, standardised weights; `mean`, `scale` standardise the features."""

    labels: tuple
    sigmas: tuple
    names: list
    mean: np.ndarray  # [F]
    scale: np.ndarray  # [F]
    weights: np.ndarray  # [F, L] on standardised features
    intercept: np.ndarray  # [L]
    alpha: dict = field(default_factory=dict)
    tune: dict = field(default_factory=dict)  # label -> [{alpha, r, rmse}]
    pixels: dict = field(default_factory=dict)

    def predict_features(self, f: np.ndarray) -> np.ndarray:
        """Features [F, ...] -> predictions [L, ...] in [0, 1] (float32); `f` is standardised in place."""
        f -= self.mean.astype(np.float32).reshape(-1, *[1] * (f.ndim - 1))
        f /= self.scale.astype(np.float32).reshape(-1, *[1] * (f.ndim - 1))
        y = np.tensordot(self.weights.T.astype(np.float32), f, axes=1)
        y += self.intercept.astype(np.float32).reshape(-1, *[1] * (f.ndim - 1))
        return np.clip(y, 0.0, 1.0)

    def record(self) -> dict:
        """JSON-ready: what the prediction store's attributes keep of the fit (weights in raw feature units)."""
        coef = self.weights / self.scale[:, None]
        intercept = self.intercept - self.mean @ coef
        return {"alphas": list(ALPHAS), "alpha": self.alpha, "tune": self.tune,
                "tune_r": {label: max(t["r"] for t in rows) for label, rows in self.tune.items()},
                "features": self.names, "sigmas": list(self.sigmas), "feature_radius": feature_radius(self.sigmas),
                "pixels": self.pixels,
                "weights": {label: {"intercept": float(intercept[j]), "coef": [float(c) for c in coef[:, j]]}
                            for j, label in enumerate(self.labels)}}  # fmt: skip


def gather(stack, targets, norms: dict, labels, pixel_sets: list[np.ndarray], sigmas) -> list[tuple]:
    """For each sorted array of flat pixel indices: (features [n, F] float32, targets [n, L] float32)."""
    planes, height, width = stack.shape
    names = feature_names(planes, sigmas)
    out = [(np.empty((len(p), len(names)), np.float32), np.empty((len(p), len(labels)), np.float32))
           for p in pixel_sets]  # fmt: skip
    for y0, y1 in row_blocks(height, width, len(names)):
        spans = [np.searchsorted(p, (y0 * width, y1 * width)) for p in pixel_sets]
        if all(a == b for a, b in spans):
            continue
        f = block_features(stack, norms[INPUT_CHANNEL], y0, y1, sigmas).reshape(len(names), -1)
        block_targets = np.asarray(targets[:, y0:y1, :]).reshape(len(labels), -1)
        for (x, y), p, (a, b) in zip(out, pixel_sets, spans):
            local = p[a:b] - y0 * width
            x[a:b] = f[:, local].T
            for j, label in enumerate(labels):
                y[a:b, j] = target(block_targets[j, local], norms[label])
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r of two 1-D arrays (nan when either is constant)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def fit(stack, targets, labels, norms: dict, mask: np.ndarray, sigmas=DEFAULT_SIGMAS, pixels: int = 200_000,
        seed: int = 0, alphas=ALPHAS) -> Ridge:  # fmt: skip
    """Fit the ridge on TRAIN pixels and choose each label's alpha on TUNE pixels (see the module doc)."""
    labels, sigmas = tuple(labels), tuple(float(s) for s in sigmas)
    radius = feature_radius(sigmas)
    names = feature_names(stack.shape[0], sigmas)
    rng = np.random.default_rng(seed)
    chosen = []
    for split, what in ((TRAIN, "training"), (TUNE, "tune")):
        index = np.flatnonzero(fit_pixels(mask, split, radius))
        if len(index) < (len(names) + 1 if split == TRAIN else 2):
            raise UserError(f"only {len(index)} {what} pixels lie {radius} pixels (the features' reach at sigma "
                            f"{max(sigmas):g}) clear of the test quadrant; use smaller --sigmas, or a wider "
                            "--tune-band")  # fmt: skip
        if len(index) > pixels:
            index = np.sort(rng.choice(index, pixels, replace=False))
        chosen.append(index)
    log.info("features of %d training and %d tune pixels (%d features)", len(chosen[0]), len(chosen[1]), len(names))
    (x, y), (xt, yt) = gather(stack, targets, norms, labels, chosen, sigmas)
    mean = x.mean(axis=0, dtype=np.float64)
    scale = x.std(axis=0, dtype=np.float64)
    scale[~(scale > 1e-12)] = 1.0  # a constant feature: centred to 0, it takes no weight
    model = Ridge(labels, sigmas, names, mean, scale, np.zeros((len(names), len(labels))), y.mean(axis=0, dtype=np.float64),
                  pixels={"train": len(chosen[0]), "tune": len(chosen[1])})  # fmt: skip
    # Standardised normal equations, accumulated in float64 over chunks of the sample.
    gram, cross = np.zeros((len(names), len(names))), np.zeros((len(names), len(labels)))
    for a in range(0, len(x), 65536):
        z = (x[a : a + 65536] - mean) / scale
        gram += z.T @ z
        cross += z.T @ (y[a : a + 65536] - model.intercept)
    evals, evecs = np.linalg.eigh(gram / len(x))
    projected = evecs.T @ (cross / len(x))
    tune_features = np.ascontiguousarray(xt.T)
    candidates = []
    for alpha in alphas:
        model.weights = evecs @ (projected / (evals + alpha)[:, None])
        predicted = model.predict_features(tune_features.copy())
        candidates.append(model.weights)
        for j, label in enumerate(labels):
            r = pearson(predicted[j], yt[:, j])
            rmse = float(np.sqrt(np.mean((predicted[j].astype(np.float64) - yt[:, j]) ** 2)))
            model.tune.setdefault(label, []).append({"alpha": alpha, "r": r, "rmse": rmse})
    best = np.zeros_like(model.weights)
    for j, label in enumerate(labels):
        rs = [t["r"] if np.isfinite(t["r"]) else -np.inf for t in model.tune[label]]
        k = max(range(len(alphas)), key=lambda i: (rs[i], i))  # ties: the stronger penalty
        model.alpha[label] = alphas[k]
        best[:, j] = candidates[k][:, j]
        log.info("%s: alpha %g, tune r %.3f", label, alphas[k], model.tune[label][k]["r"])
    model.weights = best
    return model


# ----------------------------------------------------------------------------- predict


def predict(model: Ridge, stack, norm: dict):
    """The whole image [L, y, x] float32 as a Dask array, one task per block of rows."""
    import dask
    import dask.array as da

    planes, height, width = stack.shape
    blocks = []
    for y0, y1 in row_blocks(height, width, len(model.names)):
        task = dask.delayed(lambda a, b: model.predict_features(block_features(stack, norm, a, b, model.sigmas)))
        blocks.append(da.from_delayed(task(y0, y1), (len(model.labels), y1 - y0, width), np.float32))
    return da.concatenate(blocks, axis=1)


# ----------------------------------------------------------------------------- CLI


def sigma_list(text: str) -> tuple[float, ...]:
    """An argparse type: comma-separated positive Gaussian sigmas, e.g. 1,2,4,8,16."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not values or not all(np.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: sigmas must be positive numbers, e.g. 1,2,4,8,16")
    return tuple(sorted(set(values)))


def add_split_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test-quadrant", choices=QUADRANTS, default="bottom-right",
                   help="the held-out quadrant (default bottom-right)")  # fmt: skip
    p.add_argument("--tune-band", type=positive_int, default=96,
                   help="rows of the tune strip beside the test quadrant (default 96)")  # fmt: skip


def check_split(args, shape: tuple[int, int], well) -> np.ndarray:
    """The split mask of a well of `shape`, refusing a tune band that does not fit in its quadrant."""
    if args.tune_band >= shape[0] // 2:
        raise UserError(f"{well}: --tune-band {args.tune_band} does not fit in a quadrant of a "
                        f"{shape[0]} x {shape[1]} well (at most {shape[0] // 2 - 1} rows)")  # fmt: skip
    return split_mask(shape, args.test_quadrant, args.tune_band)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--well", required=True, help="the well store (deepflows isl-ingest)")
    p.add_argument("--out", required=True, help="prediction store to write (e.g. results/ridge.ome.zarr)")
    add_split_arguments(p)
    p.add_argument("--sigmas", type=sigma_list, default=DEFAULT_SIGMAS,
                   help="Gaussian scales of the features, in pixels (default 1,2,4,8,16)")  # fmt: skip
    p.add_argument("--pixels", type=positive_int, default=200_000,
                   help="training pixels sampled for the fit (default 200000; also caps the tune pixels)")  # fmt: skip
    p.add_argument("--seed", type=seed, default=0)


def run(args: argparse.Namespace) -> None:
    from deepflows.imaging.isl.prediction_store import write_predictions
    from deepflows.outputs import check_new_output

    check_new_output(args.out)
    stack, targets, labels, norms = load_well(args.well)
    shape = tuple(stack.shape[-2:])
    mask = check_split(args, shape, args.well)
    model = fit(stack, targets, labels, norms, mask, args.sigmas, args.pixels, args.seed)
    log.info("predicting %d x %d pixels", *shape)
    record = {**model.record(), "seed": args.seed,
              "split": {"test_quadrant": args.test_quadrant, "tune_band": args.tune_band,
                        "fit": "TRAIN pixels clear of the test quadrant by the features' reach",
                        "alpha": "TUNE pixels clear of the test quadrant, the best Pearson r per label"}}  # fmt: skip
    write_predictions(args.out, predict(model, stack, norms[INPUT_CHANNEL]), [(label, "mean") for label in labels],
                      model="ridge", attrs={"ridge": record, "well": str(args.well),
                                            "command": getattr(args, "command_line", "")})  # fmt: skip
