"""`deepflows focus-eval`: the focus model vs a classical baseline on held-out in-focus fields.

    deepflows focus-eval --model resources/models/focus-quality --train-images 'DIR/*a0[1-6]*.png'
                         --test-images 'DIR/*a0[7-9]*.png' --out DIR [--seed S]

The test fields are defocused to every level (Poisson noise at gain 1, seeded) and cut into the patch grid.
Patch-level figures count the patches that show something (deepflows.imaging.focus_data.content_mask);
image-level figures rate each (field, level) image as a whole: for the model the certainty-weighted mean of
all its patches' distributions (as `deepflows focus`), for the baseline the mean over the patches that
show something (it is lent the true content mask: its features cannot tell an empty patch from a sharp one).

The baseline reads two classical sharpness measures per patch, each divided by the patch's variance so that
brightness and contrast cancel: the Brenner gradient (mean squared difference of pixels two apart, in x and
y) and the variance of the Laplacian. A Gaussian per level over (log Brenner, log Laplacian variance) is
fitted on the content patches of the training fields at every level; a patch gets the level of highest
likelihood, and its normalised likelihoods serve as its distribution.

Writes DIR/metrics.json (overall and per level), DIR/per_level.tsv and DIR/accuracy_per_level.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from deepflows.arguments import seed
from deepflows.errors import UserError
from deepflows.imaging.defocus import LEVELS
from deepflows.outputs import output_directory, save_figure, write_text


def sharpness_features(patches: np.ndarray) -> np.ndarray:
    """[N, p, p] -> [N, 2]: log Brenner gradient and log variance of the Laplacian, over the patch variance."""
    p = patches.astype(np.float64)
    var = np.maximum(p.var(axis=(1, 2)), 1e-9)
    brenner = (
        ((p[:, :, 2:] - p[:, :, :-2]) ** 2).mean(axis=(1, 2)) + ((p[:, 2:] - p[:, :-2]) ** 2).mean(axis=(1, 2))
    ) / 2
    lap = p[:, 1:-1, :-2] + p[:, 1:-1, 2:] + p[:, :-2, 1:-1] + p[:, 2:, 1:-1] - 4 * p[:, 1:-1, 1:-1]
    return np.log(np.stack([brenner / var, np.maximum(lap.var(axis=(1, 2)), 1e-12) / var], axis=1))


class SharpnessBaseline:
    """A Gaussian per level over the sharpness features (see the module doc)."""

    def fit(self, patches: np.ndarray, levels: np.ndarray) -> SharpnessBaseline:
        x = sharpness_features(patches)
        self.means = np.stack([x[levels == k].mean(axis=0) for k in range(LEVELS)])
        self.covs = np.stack([np.cov(x[levels == k].T) + 1e-6 * np.eye(2) for k in range(LEVELS)])
        return self

    def probs(self, patches: np.ndarray) -> np.ndarray:
        x = sharpness_features(patches)
        loglik = np.empty((len(x), LEVELS))
        for k in range(LEVELS):
            d = x - self.means[k]
            inv = np.linalg.inv(self.covs[k])
            loglik[:, k] = -0.5 * np.einsum("ni,ij,nj->n", d, inv, d) - 0.5 * np.log(np.linalg.det(self.covs[k]))
        loglik -= loglik.max(axis=1, keepdims=True)
        p = np.exp(loglik)
        return p / p.sum(axis=1, keepdims=True)


def evaluate(probs: np.ndarray, levels: np.ndarray, fields: np.ndarray, content: np.ndarray,
             oracle_content: bool = False) -> dict:  # fmt: skip
    """Patch-level (content patches) and image-level metrics, overall and per true level. An image's rating
    is the certainty-weighted mean of all its patches, or with `oracle_content` the plain mean of the
    patches that show something (the baseline cannot tell an empty patch; the true mask is lent to it)."""
    from deepflows.imaging.focus_model import aggregate
    from deepflows.imaging.focus_train import level_metrics

    def rate(sel):
        if oracle_content:
            return aggregate(probs[sel & content], np.ones(int((sel & content).sum())))
        return aggregate(probs[sel])

    predicted = probs.argmax(-1)
    patch = level_metrics(predicted[content], levels[content])
    images = [(k, lv, rate((fields == k) & (levels == lv))) for k in np.unique(fields) for lv in range(LEVELS)]
    image_pred = np.array([r["level"] if r else -1 for _, _, r in images])
    image_true = np.array([lv for _, lv, _ in images])
    per_level = []
    for lv in range(LEVELS):
        sel = content & (levels == lv)
        per_level.append({"level": lv, "patches": int(sel.sum()),
                          "patch_exact": float(np.mean(predicted[sel] == lv)),
                          "patch_within_one": float(np.mean(np.abs(predicted[sel] - lv) <= 1)),
                          "image_exact": float(np.mean(image_pred[image_true == lv] == lv))})  # fmt: skip
    return {"patch": patch, "image": level_metrics(image_pred, image_true), "per_level": per_level}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    p.add_argument(
        "--train-images", nargs="+", required=True, help="the fields the model was trained on (baseline fit)"
    )
    p.add_argument("--test-images", nargs="+", required=True, help="held-out in-focus fields")
    p.add_argument("--out", required=True, help="directory for metrics.json, per_level.tsv and the figure")
    p.add_argument("--seed", type=seed, default=7)


def run(args: argparse.Namespace) -> None:
    import logging

    from deepflows.imaging.focus_data import DefocusSet, load_field
    from deepflows.imaging.focus_model import Scorer, certainty
    from deepflows.imaging.io import expand_images
    from deepflows.nn.model_dir import load_model
    from deepflows.tables import write_tsv

    log = logging.getLogger("deepflows.focus_eval")
    train_paths, test_paths = expand_images(args.train_images), expand_images(args.test_images)
    overlap = {p.resolve() for p in train_paths} & {p.resolve() for p in test_paths}
    if overlap:
        raise UserError(f"{min(overlap)}: given as both a training and a test image")
    model, meta = load_model(args.model)
    with output_directory(args.out) as out:
        log.info("fitting the baseline and scoring the test fields")
        train = DefocusSet([load_field(p) for p in train_paths]).grid(seed=args.seed)
        test_x, test_y, test_field, test_content = DefocusSet([load_field(p) for p in test_paths]).grid(
            seed=args.seed + 1)  # fmt: skip
        baseline = SharpnessBaseline().fit(train[0][train[3]], train[1][train[3]])
        model_probs = Scorer(model)(test_x)
        results = {"model": evaluate(model_probs, test_y, test_field, test_content),
                   "baseline": evaluate(baseline.probs(test_x), test_y, test_field, test_content,
                                        oracle_content=True)}  # fmt: skip
        results["certainty"] = {"content_patches_mean": float(certainty(model_probs[test_content]).mean()),
                                "empty_patches_mean": float(certainty(model_probs[~test_content]).mean())}  # fmt: skip
        results["test_images"] = [str(p) for p in test_paths]
        results["train_images"] = [str(p) for p in train_paths]
        results["model_sha256"] = meta["sha256"]
        write_text(out / "metrics.json", json.dumps(results, indent=2) + "\n")
        rows = [{**{f"model_{k}": v for k, v in m.items()}, **{f"baseline_{k}": v for k, v in b.items()},
                 "level": m["level"]}
                for m, b in zip(results["model"]["per_level"], results["baseline"]["per_level"])]  # fmt: skip
        columns = ["level", "model_patches"] + [f"{w}_{k}" for k in ("patch_exact", "patch_within_one", "image_exact")
                                                for w in ("model", "baseline")]  # fmt: skip
        write_tsv(rows, columns, out / "per_level.tsv")
        plot(results, out / "accuracy_per_level.png")
    for who in ("model", "baseline"):
        for scope in ("patch", "image"):
            m = results[who][scope]
            log.info("%s %s-level: exact %.3f, within-one %.3f, Spearman %.3f (n=%d)", who, scope,
                     m["exact"], m["within_one"], m["spearman"], m["n"])  # fmt: skip


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(LEVELS)
    for offset, who in ((-0.2, "model"), (0.2, "baseline")):
        per = results[who]["per_level"]
        ax.bar(x + offset, [r["patch_exact"] for r in per], 0.4, label=f"{who}: exact")
        ax.plot(x + offset, [r["patch_within_one"] for r in per], "k.", ms=4)
    ax.set(xlabel="true defocus level", ylabel="patch accuracy (dots: within one)", xticks=x, ylim=(0, 1.05))
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    save_figure(fig, out, dpi=120)
    plt.close(fig)
