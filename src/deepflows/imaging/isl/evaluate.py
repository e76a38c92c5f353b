"""`deepflows isl-evaluate`: In Silico Labeling predictions scored against the well's fluorescence, on one split.

    deepflows isl-evaluate --well WELL.ome.zarr --predictions PRED.ome.zarr [--name ours]
                           [--baseline NAME=STORE ...] [--split test] [--labels NFH] [--test-quadrant bottom-right]
                           [--tune-band 96] --out DIR

Every store is a prediction store (deepflows.imaging.isl.prediction_store) of the well's size with a
prediction for each of its labels. Only the pixels of --split (deepflows.imaging.isl.split_mask; the test
quadrant by default) are scored. The truth is each label's normalised intensity clipped to [0, 1].

Per label and model (ours, then each baseline):
- Pearson r and RMSE of the point prediction (the mean where the store has one, else the median);
- calibration, for a model with quantiles: the share of true pixels inside [q25, q75] (nominal 0.5) and
  inside [q05, q95] (nominal 0.9). The model's targets were binned into BINS bins of width 1/BINS, so its
  quantiles are known to half a bin at best: a pixel counts as inside when its true value lies in the
  interval widened by half a bin (1/512 for 256 bins) on each side;
- uncertainty bins, for a model with q05/q95 (measure "width": q95 - q05) or entropy (measure "entropy",
  bits): the pixels in ten equal-count bins (deciles) of the measure, and the mean absolute error of the
  point prediction in each. Error should rise with uncertainty: Spearman's rho of the bins' mean
  uncertainty vs their MAE says how well it does.

Writes, into DIR (a new folder, written whole or not at all): pearson.tsv (label, model, statistic, r, rmse,
pixels), calibration.tsv, uncertainty_bins.tsv, summary.json, panels_<LABEL>.png per label (the middle input
plane, the truth, each model's point prediction and our uncertainty over the scored region, block-averaged to
at most 512 pixels a side) and uncertainty.png (MAE per uncertainty decile, per label and model).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import warnings
from pathlib import Path

import numpy as np

from deepflows.errors import UserError
from deepflows.imaging.isl import BINS, INPUT_CHANNEL, SPLITS, normalize
from deepflows.imaging.isl.baselines import add_split_arguments, check_split, load_well, pearson, target

log = logging.getLogger("deepflows.isl.evaluate")

HALF_BIN = 0.5 / BINS
INTERVALS = (("q25", "q75", 0.5), ("q05", "q95", 0.9))
MEASURES = {"width": "q95 - q05 width (normalised intensity)", "entropy": "entropy (bits)"}
DECILES = 10
PANEL_PIXELS = 512  # the longest side of a panel, after block averaging

PEARSON_COLUMNS = ["label", "model", "statistic", "r", "rmse", "pixels"]
CALIBRATION_COLUMNS = ["label", "model", "interval", "nominal", "coverage", "mean_width", "pixels"]
BIN_COLUMNS = ["label", "model", "measure", "bin", "uncertainty_low", "uncertainty_high", "uncertainty_mean",
               "mae", "pixels"]  # fmt: skip


# ----------------------------------------------------------------------------- metrics


def rmse(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, np.float64) - truth) ** 2)))


def coverage(truth: np.ndarray, low: np.ndarray, high: np.ndarray, tolerance: float = HALF_BIN) -> float:
    """The share of `truth` inside [low - tolerance, high + tolerance]."""
    return float(np.mean((truth >= low - tolerance) & (truth <= high + tolerance)))


def spearman(a, b) -> float:
    """Spearman's rho (nan when either side is constant)."""
    from scipy.stats import rankdata

    return pearson(rankdata(a), rankdata(b))


def uncertainty_bins(uncertainty: np.ndarray, error: np.ndarray, bins: int = DECILES) -> list[dict]:
    """Pixels in `bins` equal-count bins by rank of `uncertainty` (ties split by position: one value held by
    many pixels still spreads over bins of equal size); per bin its range and mean, and the mean of `error`."""
    order = np.argsort(uncertainty, kind="stable")
    rows = []
    for k, part in enumerate(np.array_split(order, bins), 1):
        if len(part):
            u = uncertainty[part]
            rows.append({"bin": k, "uncertainty_low": float(u.min()), "uncertainty_high": float(u.max()),
                         "uncertainty_mean": float(u.mean(dtype=np.float64)),
                         "mae": float(np.mean(error[part], dtype=np.float64)), "pixels": len(part)})  # fmt: skip
    return rows


def measure(pred, label: str, name: str, ys: slice, xs: slice) -> np.ndarray | None:
    """The uncertainty map `name` (a key of MEASURES) of one label over [ys, xs], or None when the store lacks it."""
    if name == "width" and pred.has(label, "q05") and pred.has(label, "q95"):
        return np.asarray(pred.get(label, "q95")[ys, xs]) - np.asarray(pred.get(label, "q05")[ys, xs])
    if name == "entropy" and pred.has(label, "entropy"):
        return np.asarray(pred.get(label, "entropy")[ys, xs])
    return None


# ----------------------------------------------------------------------------- evaluation


def region(mask: np.ndarray, split: int) -> tuple[slice, slice, np.ndarray]:
    """(rows, columns) of the bounding box of `split` in `mask`, and which pixels of the box are in it."""
    ys, xs = np.nonzero(mask == split)
    box = slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1)
    return box[0], box[1], mask[box] == split


def downsample(image: np.ndarray, inside: np.ndarray, factor: int) -> np.ndarray:
    """Block mean of the pixels `inside` (nan elsewhere) over `factor` x `factor` blocks."""
    image = np.where(inside, image, np.nan).astype(np.float32)
    if factor == 1:
        return image
    h, w = (s // factor * factor for s in image.shape)
    blocks = image[:h, :w].reshape(h // factor, factor, w // factor, factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # blocks with no pixel of the split stay nan
        return np.nanmean(blocks, axis=(1, 3))


def evaluate(stack, targets, labels, norms: dict, models: dict, mask: np.ndarray, split: int) -> dict:
    """Score `models` (name -> Predictions, ours first) on the pixels of `split`: the rows of the three tables,
    the summary per label and model, and the downsampled pictures of each label's panels."""
    ys, xs, inside = region(mask, split)
    factor = max(1, math.ceil(max(inside.shape) / PANEL_PIXELS))
    tables = {"pearson": [], "calibration": [], "uncertainty_bins": []}
    summary, panels = {}, {}
    ours = next(iter(models))
    middle = stack.shape[0] // 2
    plane = downsample(normalize(np.asarray(stack[middle, ys, xs]), norms[INPUT_CHANNEL]), inside, factor)
    for j, label in enumerate(labels):
        truth_image = target(np.asarray(targets[j, ys, xs]), norms[label])
        truth = truth_image[inside]
        pictures = {"input": (f"{INPUT_CHANNEL}, z = {middle} of {stack.shape[0]}", plane),
                    "truth": (f"truth: {label}", downsample(truth_image, inside, factor)), "models": []}  # fmt: skip
        summary[label] = {}
        for name, pred in models.items():
            statistic = pred.point_statistic(label)
            point_image = np.asarray(pred.get(label, statistic)[ys, xs])
            point = point_image[inside]
            error = np.abs(point.astype(np.float64) - truth)
            row = {"label": label, "model": name, "statistic": statistic, "r": pearson(point, truth),
                   "rmse": rmse(point, truth), "pixels": int(truth.size)}  # fmt: skip
            tables["pearson"].append(row)
            scores = {k: row[k] for k in ("statistic", "r", "rmse", "pixels")}
            for low, high, nominal in INTERVALS:
                if pred.has(label, low) and pred.has(label, high):
                    lo, hi = (np.asarray(pred.get(label, q)[ys, xs])[inside] for q in (low, high))
                    cov = coverage(truth, lo, hi)
                    tables["calibration"].append({"label": label, "model": name, "interval": f"{low}-{high}",
                                                  "nominal": nominal, "coverage": cov,
                                                  "mean_width": float(np.mean(hi - lo, dtype=np.float64)),
                                                  "pixels": int(truth.size)})  # fmt: skip
                    scores[f"coverage_{low}_{high}"] = cov
            uncertainty_map = None
            for key in MEASURES:
                u = measure(pred, label, key, ys, xs)
                if u is None:
                    continue
                uncertainty_map = uncertainty_map if uncertainty_map is not None else (key, u)
                rows = uncertainty_bins(u[inside], error)
                tables["uncertainty_bins"] += [{"label": label, "model": name, "measure": key, **r} for r in rows]
                scores[f"spearman_{key}"] = spearman([r["uncertainty_mean"] for r in rows], [r["mae"] for r in rows])
            summary[label][name] = scores
            pictures["models"].append((f"{name} ({statistic}), r = {row['r']:.3f}",
                                       downsample(point_image, inside, factor)))  # fmt: skip
            if name == ours and uncertainty_map is not None:
                pictures["uncertainty"] = (f"{name}: uncertainty", MEASURES[uncertainty_map[0]],
                                           downsample(uncertainty_map[1], inside, factor))  # fmt: skip
        panels[label] = pictures
    return {"tables": tables, "summary": summary, "panels": panels, "factor": factor,
            "box": [[ys.start, ys.stop], [xs.start, xs.stop]], "pixels": int(inside.sum())}  # fmt: skip


# ----------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_panels(label: str, pictures: dict, title: str, out: Path) -> None:
    """One row: the input plane, the truth, each model's prediction, our uncertainty; shared colour bars."""
    from deepflows.outputs import save_figure

    plt = _pyplot()
    images = [pictures["truth"], *pictures["models"]]
    n = 1 + len(images) + ("uncertainty" in pictures)
    fig, axes = plt.subplots(1, n, figsize=(3.1 * n, 4.1), layout="constrained", squeeze=False)
    axes = axes[0]
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    name, plane = pictures["input"]
    finite = plane[np.isfinite(plane)]
    lo, hi = (np.percentile(finite, (1, 99)) if finite.size else (0, 1))
    gray = plt.get_cmap("gray").with_extremes(bad="#c6dbef")  # pixels outside the split: light blue here
    shown = axes[0].imshow(plane, cmap=gray, vmin=lo, vmax=hi if hi > lo else lo + 1)
    axes[0].set_title(name, fontsize=9)
    fig.colorbar(shown, ax=axes[0], location="bottom", shrink=0.9, label="phase contrast (normalised)")
    magma = plt.get_cmap("magma").with_extremes(bad="0.8")
    for ax, (name, image) in zip(axes[1:], images):
        shown = ax.imshow(image, cmap=magma, vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
    fig.colorbar(shown, ax=list(axes[1 : 1 + len(images)]), location="bottom", shrink=0.5,
                 label="normalised intensity")  # fmt: skip
    if "uncertainty" in pictures:
        name, what, image = pictures["uncertainty"]
        finite = image[np.isfinite(image)]
        top = float(np.percentile(finite, 99)) if finite.size else 1.0
        shown = axes[-1].imshow(image, cmap=plt.get_cmap("viridis").with_extremes(bad="0.8"), vmin=0,
                                vmax=top if top > 0 else 1.0)  # fmt: skip
        axes[-1].set_title(name, fontsize=9)
        fig.colorbar(shown, ax=axes[-1], location="bottom", shrink=0.9, label=what)
    fig.suptitle(title, fontsize=10)
    fig.get_layout_engine().set(rect=(0, 0, 1, 0.95))  # room for the title above the panels' own titles
    save_figure(fig, out, dpi=100)
    plt.close(fig)


def plot_uncertainty(rows: list[dict], summary: dict, out: Path) -> None:
    """MAE per uncertainty decile, one line per label and model, one panel per measure."""
    from deepflows.outputs import save_figure

    plt = _pyplot()
    measures = [m for m in MEASURES if any(r["measure"] == m for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(measures)), figsize=(5.2 * max(1, len(measures)), 4), squeeze=False)
    axes = axes[0]
    if not measures:
        axes[0].text(0.5, 0.5, "no model here predicts quantiles or entropy:\nno uncertainty to bin",
                     ha="center", va="center", transform=axes[0].transAxes)  # fmt: skip
        axes[0].set_axis_off()
    for ax, m in zip(axes, measures):
        keys = list(dict.fromkeys((r["label"], r["model"]) for r in rows if r["measure"] == m))
        models = {model for _, model in keys}
        for label, model in keys:
            mine = [r for r in rows if r["measure"] == m and r["label"] == label and r["model"] == model]
            rho = summary[label][model].get(f"spearman_{m}", float("nan"))
            name = label if len(models) == 1 else f"{label} ({model})"
            ax.plot([r["bin"] for r in mine], [r["mae"] for r in mine], "o-", ms=4, label=f"{name}, rho = {rho:.2f}")
        ax.set(xlabel=f"decile of predicted uncertainty: {MEASURES[m]}\n(1 = most certain)",
               ylabel="mean absolute error (normalised intensity)", xticks=range(1, DECILES + 1))  # fmt: skip
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="label, Spearman of bin means", title_fontsize=8)
    fig.tight_layout()
    save_figure(fig, out, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI


def baseline_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=STORE, e.g. ridge=results/ridge.ome.zarr")
    return name.strip(), path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--well", required=True, help="the well store (deepflows isl-ingest)")
    p.add_argument("--predictions", required=True, help="our prediction store (deepflows isl-predict)")
    p.add_argument("--name", default="ours", help="our model's name in the tables (default ours)")
    p.add_argument("--baseline", type=baseline_arg, action="append", default=[], metavar="NAME=STORE",
                   help="a prediction store to compare with, e.g. ridge=ridge.ome.zarr (repeatable)")  # fmt: skip
    p.add_argument("--split", choices=list(SPLITS), default="test", help="the pixels scored (default test)")
    p.add_argument("--labels", help="comma-separated labels to score (default: all of the well's), e.g. a model "
                                    "trained on one")  # fmt: skip
    add_split_arguments(p)
    p.add_argument("--out", required=True, help="output folder (tables, summary.json, figures)")


def _clean(value):
    """JSON-ready: nan and infinities as null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _rounded(rows: list[dict]) -> list[dict]:
    return [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()} for row in rows]


def evaluate_stores(well: str | Path, predictions: str | Path, out: str | Path, baselines=(), name: str = "ours",
                    split: str = "test", test_quadrant: str = "bottom-right", tune_band: int = 96,
                    only: list[str] | None = None) -> dict:  # fmt: skip
    """The whole stage: check every input, then write DIR `out`; returns summary.json's content."""
    from deepflows.imaging.isl.prediction_store import open_predictions
    from deepflows.outputs import output_directory, write_text
    from deepflows.tables import write_tsv

    names = [name, *(n for n, _ in baselines)]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"model name {twice[0]!r} given twice; name each store once (--name, --baseline NAME=...)")
    stack, targets, labels, norms = load_well(well)
    if only:
        unknown = [label for label in only if label not in labels]
        if unknown:
            raise UserError(f"--labels: {unknown[0]} is not a label of {well} ({', '.join(labels)})")
        targets, labels = targets[[labels.index(label) for label in only]], tuple(only)
    shape = tuple(stack.shape[-2:])
    mask = check_split(argparse.Namespace(test_quadrant=test_quadrant, tune_band=tune_band), shape, well)
    models = {n: open_predictions(p, labels, shape, well) for n, p in [(name, predictions), *baselines]}
    with output_directory(out, whole=True) as folder:
        log.info("scoring %s on the %s split", ", ".join(models), split)
        result = evaluate(stack, targets, labels, norms, models, mask, SPLITS[split])
        tables = result["tables"]
        write_tsv(_rounded(tables["pearson"]), PEARSON_COLUMNS, folder / "pearson.tsv")
        write_tsv(_rounded(tables["calibration"]), CALIBRATION_COLUMNS, folder / "calibration.tsv")
        write_tsv(_rounded(tables["uncertainty_bins"]), BIN_COLUMNS, folder / "uncertainty_bins.tsv")
        (y0, y1), (x0, x1) = result["box"]
        where = f"{test_quadrant} quadrant" if split == "test" else f"{split} split"
        for label, pictures in result["panels"].items():
            title = (f"{label}: {where}, rows {y0}-{y1 - 1}, columns {x0}-{x1 - 1}"
                     + (f" (shown averaged over {result['factor']} x {result['factor']} pixel blocks)"
                        if result["factor"] > 1 else "")
                     + ("; pixels outside the split blanked" if result["pixels"] < (y1 - y0) * (x1 - x0) else ""))  # fmt: skip
            plot_panels(label, pictures, title, folder / f"panels_{label}.png")
        plot_uncertainty(tables["uncertainty_bins"], result["summary"], folder / "uncertainty.png")
        summary = _clean({"split": split, "test_quadrant": test_quadrant, "tune_band": tune_band,
                          "pixels": result["pixels"], "region": {"rows": [y0, y1], "columns": [x0, x1]},
                          "well": str(well), "models": {n: str(m.path) for n, m in models.items()},
                          "inside_tolerance": HALF_BIN, "labels": result["summary"]})  # fmt: skip
        write_text(folder / "summary.json", json.dumps(summary, indent=2) + "\n")
    for row in tables["pearson"]:
        log.info("%s %s: r %.3f, rmse %.4f (%d pixels)", row["label"], row["model"], row["r"], row["rmse"],
                 row["pixels"])  # fmt: skip
    return summary


def run(args: argparse.Namespace) -> None:
    evaluate_stores(args.well, args.predictions, args.out, args.baseline, args.name, args.split,
                    args.test_quadrant, args.tune_band, args.labels.split(",") if args.labels else None)  # fmt: skip
