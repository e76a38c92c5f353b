"""`deepflows segment-fov`: "does this field of view contain the target region?", scored per field as the
Augmented Reality Microscope's paper scored its detectors (AUC per field of view).

    deepflows segment-fov --task HE_STORE.zarr --model DIR --out DIR [--field 320x240] [--stride 80]
                          [--target haematoxylin-dense] [--min-fraction 0.05]

Fields: field-sized windows of every region of the task store (the slide's train rows for fitting; its test
rows and the extra test image for scoring), at a stride (overlapping fields, as a pathologist's successive
views overlap). A field is positive when at least --min-fraction of its pixels are of the target class in the
derived labels: the labels come from colour deconvolution (deepflows.imaging.segment.labels.he_regions), not
from a pathologist, so the AUC measures agreement with that stain-derived definition of the region.

Two scores per field, both from the trained segmentation model, none looking at the labels:
- `head`: a field-of-view classifier head: a logistic regression on the backbone's high-level features
  averaged over the field (320 values), fitted on the train fields' labels (the backbone stays as trained).
- `segmentation`: the fraction of the field's pixels the model's segmentation assigns to the target class.
Writes fields.csv (each field, its label and scores), fov.json (AUC per score and split, with the positive
rate) and roc.png (ROC curves).
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np

from deepflows.arguments import positive_int
from deepflows.errors import UserError

log = logging.getLogger("deepflows.segment_fov")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from deepflows.imaging.arm.cli import frame_size

    p.add_argument("--task", required=True, help="the task store (deepflows segment-data)")
    p.add_argument("--model", required=True, help="a segment-train model of that task")
    p.add_argument("--out", required=True, help="the output directory")
    p.add_argument("--field", type=frame_size, default=(320, 240), help="field WxH in pixels (default 320x240)")
    p.add_argument("--stride", type=positive_int, default=80, help="step between fields in pixels (default 80)")
    p.add_argument("--target", help="the target class (default: the model's last class)")
    p.add_argument("--min-fraction", type=float, default=0.05,
                   help="a field is positive when this fraction of it is the target class (default 0.05)")


def fields(shape: tuple[int, int], size: tuple[int, int], stride: int) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the size (w, h) windows at `stride` wholly inside an image of `shape`."""
    w, h = size
    return [(y, x) for y in range(0, shape[0] - h + 1, stride) for x in range(0, shape[1] - w + 1, stride)]


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve: the chance a positive field outscores a negative one (ties count half)."""
    from scipy.stats import rankdata

    labels = labels.astype(bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if not pos or not neg:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def field_features(model, segmenter, image: np.ndarray, corners, size, target: int) -> tuple[np.ndarray, np.ndarray]:
    """(pooled high-level backbone features [n, 320], the target class's predicted fraction [n]) of each field."""
    import jax
    from flax import nnx

    graphdef, state = nnx.split(model.backbone)
    pooled = jax.jit(lambda s, x: nnx.merge(graphdef, s).features(x)[1].mean(axis=(1, 2)))
    w, h = size
    feats, fractions = [], []
    for y, x in corners:
        window = image[y : y + h, x : x + w]
        feats.append(np.asarray(pooled(state, window[None].astype(np.float32))[0]))
        fractions.append(float((segmenter.predict(window).argmax(-1) == target).mean()))
    return np.asarray(feats), np.asarray(fractions)


def fit_head(features: np.ndarray, labels: np.ndarray, steps: int = 500, l2: float = 1e-3):
    """A logistic regression on standardised features (full-batch gradient descent, Adam): returns a scorer."""
    import jax
    import jax.numpy as jnp
    import optax

    mean, std = features.mean(0), features.std(0) + 1e-6
    x, y = jnp.asarray((features - mean) / std), jnp.asarray(labels, jnp.float32)
    params = {"w": jnp.zeros(x.shape[1]), "b": jnp.zeros(())}
    tx = optax.adam(0.05)
    opt = tx.init(params)

    def loss(p):
        logits = x @ p["w"] + p["b"]
        return optax.sigmoid_binary_cross_entropy(logits, y).mean() + l2 * jnp.sum(p["w"] ** 2)

    @jax.jit
    def step(p, o):
        g = jax.grad(loss)(p)
        updates, o = tx.update(g, o)
        return optax.apply_updates(p, updates), o

    for _ in range(steps):
        params, opt = step(params, opt)
    w, b = np.asarray(params["w"]), float(params["b"])
    return lambda f: ((f - mean) / std) @ w + b


def plot_roc(curves: dict, out) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepflows.outputs import save_figure

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (scores, labels, value) in curves.items():
        order = np.argsort(-scores)
        hits = labels[order].astype(bool)
        tpr = np.concatenate([[0], np.cumsum(hits) / max(1, hits.sum())])
        fpr = np.concatenate([[0], np.cumsum(~hits) / max(1, (~hits).sum())])
        ax.plot(fpr, tpr, label=f"{name} (AUC {value:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    ax.set_xlabel("false positive rate (fields without the target region)")
    ax.set_ylabel("true positive rate (fields with it)")
    ax.set_title("Field-of-view detection of the target region\n(labels: stain-derived)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, out, 110)
    plt.close(fig)


def run(args: argparse.Namespace) -> None:
    from deepflows.imaging.segment.predict import Segmenter, load_segmentation_model, target_index
    from deepflows.imaging.segment.tasks import open_task
    from deepflows.outputs import output_directory, write_text
    from deepflows.tables import write_tsv

    task = open_task(args.task)
    model, meta = load_segmentation_model(args.model, task.name)
    classes = list(meta["classes"])
    target = target_index(classes, args.target, f"--target {args.target}")
    if not 0 < args.min_fraction < 1:
        raise UserError(f"--min-fraction {args.min_fraction}: must be between 0 and 1")
    segmenter = Segmenter(model, classes, tile=None)
    model.eval()
    rows, data = [], {}
    for split in ["train", *task.splits("test")]:
        feats, fracs, labels = [], [], []
        for k, region in enumerate(task.regions(split)):
            image, mask = np.asarray(region.image), np.asarray(region.mask)
            corners = fields(mask.shape, args.field, args.stride)
            f, s = field_features(model, segmenter, image, corners, args.field, target)
            w, h = args.field
            truth = [float((mask[y : y + h, x : x + w] == target).mean()) for y, x in corners]
            feats.append(f)
            fracs.append(s)
            labels += [t >= args.min_fraction for t in truth]
            rows += [{"split": split, "region": k, "y": y, "x": x, "target_fraction": round(t, 4),
                      "positive": int(t >= args.min_fraction), "segmentation": round(float(v), 4)}
                     for (y, x), t, v in zip(corners, truth, s)]  # fmt: skip
        if labels:
            data[split] = (np.concatenate(feats), np.concatenate(fracs), np.asarray(labels))
    if "train" not in data or len(set(data["train"][2])) < 2:
        raise UserError(f"{args.task}: the train fields need positives and negatives to fit the head")
    head = fit_head(data["train"][0], data["train"][2])
    results, curves = {}, {}
    for split, (feats, fracs, labels) in data.items():
        scores = {"head": head(feats), "segmentation": fracs}
        results[split] = {"fields": len(labels), "positive_rate": round(float(labels.mean()), 4),
                          **{f"auc_{name}": auc(s, labels) for name, s in scores.items()}}  # fmt: skip
        if split != "train":
            for name, s in scores.items():
                if results[split][f"auc_{name}"] is not None:
                    curves[f"{split}: {name}"] = (s, labels, results[split][f"auc_{name}"])
    head_scores = iter(np.concatenate([head(data[s][0]) for s in data]))
    for row in rows:
        row["head"] = round(float(next(head_scores)), 4)
    with output_directory(args.out, whole=True) as out:
        write_tsv(rows, list(rows[0]), out / "fields.csv", delimiter=",")
        report = {"task": task.name, "model": str(args.model), "target": classes[target], "field": list(args.field),
                  "stride": args.stride, "min_fraction": args.min_fraction, "splits": results}
        write_text(out / "fov.json", json.dumps(report, indent=1))
        plot_roc(curves, out / "roc.png")
    for split, r in results.items():
        log.info("%s: %d fields, %.1f%% positive, AUC head %s, segmentation %s", split, r["fields"],
                 100 * r["positive_rate"], r["auc_head"], r["auc_segmentation"])  # fmt: skip
