"""`deepflows isl-train`: train an In Silico Labeling model (or its U-Net baseline) on patch shards.

    deepflows isl-train --config config/model/isl_fovea_cpu.yaml --patches 'SHARD*.zarr' --tune TUNE.zarr
                        --workdir runs/isl --out resources/models/isl-neurons [--steps N] [--seed S]
                        [--labels DAPI,MAP2] [--stop-at N]

The shards are deepflows.imaging.isl.patches stores (normalised, augmented z-stack windows and their targets).
Each step draws `training.batch_size` windows at random and crops them by data.shift pixels at a random
offset, a pure function of (seed, step). Only the centre of a window is scored (data.margin pixels of
context on every side, as prediction tiles have), every pixel of it: a loss on every other pixel would be
cheaper, but the coarse towers' learned up-scale gives each position of a cell its own weights, and those
of the positions never scored would never learn (a first run at stride 2: 2.4 nats a pixel at the scored
positions of training windows, 3.3 at the others):

- isl_fovea: cross-entropy of each pixel's 256-bin distribution per label against the binned truth;
- isl_unet: the squared error of one value per pixel and label (the L2 baseline).

Tune metrics, on every pixel of the tune windows' centres: the loss, and per label Pearson's r of the
prediction (the distribution's mean) with the truth; `evaluation.select_by` picks the exported step by loss
or by the mean r. `transfer: {model: DIR}` starts a model for other labels from a trained one, as the paper
learned a new label from little data: every weight but the head is copied from DIR, and with the option
`frozen: true` of isl_fovea those stay as they are; only the new head learns.

The loop (checkpoints, exact resume, the lock, metrics.png, export as float16) is deepflows.nn.loop's.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
from pathlib import Path

import numpy as np

from deepflows.errors import UserError
from deepflows.nn.loop import add_run_arguments
from deepflows.imaging.isl import BINS, bin_centres
from deepflows.nn.task import Task

log = logging.getLogger("deepflows.isl_train")


@functools.cache
def schema() -> dict:
    from deepflows.nn.loop import config_schema

    paths = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}
    data = {
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "properties": {
            "patches": {**paths, "description": "training patch shards (Zarr stores or globs)"},
            "tune": {**paths, "description": "tune patch shards (the tune strip; never trained on)"},
            "labels": {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True,
                       "description": "the labels to learn, a subset of the shards' (default: all of them)"},
            "margin": {"type": "integer", "minimum": 0, "default": 16,
                       "description": "context pixels on each side of a window that are not scored"},
            "shift": {"type": "integer", "minimum": 0, "default": 8,
                      "description": "each step crops the windows by this many pixels at an offset drawn anew: "
                                     "translations by less than the coarse towers' cells (windows minus shift "
                                     "must be a multiple of the coarsest scale; 0: whole windows)"},
        },
    }  # fmt: skip
    transfer = {
        "type": ["object", "null"],
        "additionalProperties": False,
        "required": ["model"],
        "properties": {"model": {"type": "string", "minLength": 1,
                                 "description": "a trained isl_fovea model: every weight but the head is copied"}},
    }  # fmt: skip
    return config_schema(
        "deepflows isl-train config", ["isl_fovea", "isl_unet"], ("loss", "pearson"), training={},
        evaluation={}, sections={"data": data, "transfer": transfer},
        defaults={"training": {"batch_size": 8, "steps": 2000, "checkpoint_every": 100, "log_every": 25,
                               "keep_checkpoints": 2},
                  "evaluation": {"every": 100}, "schedule": {"learning_rate": 1e-3, "warmup_steps": 100}},
    )  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="YAML", help="the training config (see the module doc)")
    p.add_argument("--patches", nargs="+", help="training patch shards (data.patches)")
    p.add_argument("--tune", nargs="+", help="tune patch shards (data.tune)")
    p.add_argument("--labels", help="comma-separated labels to learn (data.labels; default: all)")
    add_run_arguments(p)


def isl_config(args: argparse.Namespace) -> dict:
    from deepflows.nn.loop import load_config, override, read_raw_config

    raw = read_raw_config(args.config)
    data = raw.setdefault("data", {})
    for key, value in (("patches", args.patches), ("tune", args.tune),
                       ("labels", args.labels.split(",") if args.labels else None)):  # fmt: skip
        if value:
            data[key] = value
    cfg = load_config(raw, schema(), args.config)
    for key in ("patches", "tune"):
        if key not in cfg["data"]:
            raise UserError(f"isl-train: no {key} shards; give --{key}, or data.{key} in --config")
    return override(cfg, steps=args.steps, seed=args.seed, init=args.init)


def run(args: argparse.Namespace) -> None:
    from deepflows.nn.loop import fit
    from deepflows.nn.model_dir import publish_model

    summary = fit(ISLTask(isl_config(args)), args.workdir, stop_at=args.stop_at,
                  command=getattr(args, "command_line", "deepflows isl-train"))  # fmt: skip
    if "model" not in summary:
        return
    out = publish_model(summary, args.out)
    log.info("best step %d -> %s in %.0f s", summary["best_step"], out, summary["wall_seconds"])


# ----------------------------------------------------------------------------- loss and metrics


def predicted_mean(output):
    """The model's point prediction per pixel and label: the mean of the bins' distribution, or the value."""
    import jax
    import jax.numpy as jnp

    if output.ndim == 5:
        return jnp.sum(jax.nn.softmax(output, axis=-1) * jnp.asarray(bin_centres()), axis=-1)
    return output


def scored(y, margin: int):
    """The scored part of targets [B, P, P, labels]: the centre inside `margin`."""
    return y[:, margin:y.shape[1] - margin, margin:y.shape[2] - margin]


def pixel_loss(out, truth):
    """Mean cross-entropy of per-pixel bin logits [..., labels, bins] against the binned truth [..., labels],
    or the mean squared error of values [..., labels]."""
    import jax.numpy as jnp
    import optax

    truth = truth.astype(jnp.float32)
    if out.ndim == truth.ndim + 1:
        bins = jnp.clip(jnp.floor(truth * BINS), 0, BINS - 1).astype(jnp.int32)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, bins))
    return jnp.mean((out - truth) ** 2)


@dataclasses.dataclass(frozen=True)
class ISLLoss:
    """The mean per-pixel loss over the scored centre of each window; aux: the squared error of the predicted
    mean and the number of values, summed."""

    margin: int

    def __call__(self, model, batch, constants):
        import jax.numpy as jnp

        x, y = batch  # inputs [B, P, P, planes], targets [B, P, P, labels] normalised in [0, 1]
        out = model(x, crop=self.margin)
        truth = scored(y, self.margin).astype(jnp.float32)
        se = jnp.sum((predicted_mean(out) - truth) ** 2)
        return pixel_loss(out, truth), {"se": se, "values": jnp.asarray(truth.size, jnp.float32)}


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson's r of two arrays (deepflows.imaging.isl.baselines.pearson); None, not nan, when either is
    constant: tune metrics go to JSON."""
    from deepflows.imaging.isl.baselines import pearson as r_of

    r = r_of(np.ravel(a), np.ravel(b))
    return None if np.isnan(r) else r


# ----------------------------------------------------------------------------- the task


def _expand(specs: list[str]) -> list[Path]:
    import glob

    found = []
    for spec in specs:
        matches = sorted(glob.glob(spec)) if any(c in spec for c in "*?[") else [spec]
        if not matches:
            raise UserError(f"{spec}: no patch shards match")
        found += [Path(m) for m in matches]
    return found


class ISLTask(Task):
    """isl_fovea or isl_unet on augmented z-stack windows; tuned on the tune strip's windows."""

    inputs_name = "patch shards"
    export_dtype = np.float16
    plotted = {"train": ("rmse",), "tune": ("pearson",), "loss": "loss (cross-entropy over bins, or L2)",
               "metrics_label": "RMSE (train), mean Pearson r (tune)"}

    def __init__(self, cfg: dict):
        from deepflows.imaging.isl.patches import load_patches

        self.cfg = cfg
        data = cfg["data"]
        self.train_paths, self.tune_paths = _expand(data["patches"]), _expand(data["tune"])
        x, y, attrs = load_patches(self.train_paths)
        tx, ty, tattrs = load_patches(self.tune_paths)
        shard_labels = list(attrs["labels"])
        if list(tattrs["labels"]) != shard_labels or tx.shape[1:] != x.shape[1:]:
            raise UserError(f"{self.tune_paths[0]}: tune shards differ from the training shards (window size, "
                            f"planes or labels)")  # fmt: skip
        self.labels = list(data.get("labels") or shard_labels)
        missing = [label for label in self.labels if label not in shard_labels]
        if missing:
            raise UserError(f"data.labels: {missing[0]} is not among the shards' labels ({', '.join(shard_labels)})")
        pick = [shard_labels.index(label) for label in self.labels]
        self.shift = int(data["shift"])
        size = x.shape[1] - self.shift  # what the model sees of a window
        if size <= 2 * data["margin"]:
            raise UserError(f"data.margin {data['margin']} and data.shift {self.shift}: leave nothing of the "
                            f"{x.shape[1]}-pixel windows to score")  # fmt: skip
        # the model's outputs follow the labels learned (recorded in model.json's options, which rebuild it)
        cfg["model"]["options"]["labels"] = len(self.labels)
        frozen = cfg["model"]["options"].get("frozen")
        if frozen and cfg["optimizer"]["weight_decay"]:
            raise UserError("model.options.frozen: set optimizer.weight_decay to 0, or the frozen weights decay")
        if frozen and not cfg.get("transfer"):
            raise UserError("model.options.frozen: freezes the weights of a transfer.model; none is given")
        self.x, self.y = x, y[..., pick]
        self.tune_x, self.tune_y = tx, ty[..., pick]
        self.planes = x.shape[-1]
        self.shape, self.channels = [size, size, self.planes], [f"z{k}" for k in range(self.planes)]
        self.examples = len(self.x)
        self.attrs = attrs
        self.data = {"patches": [str(p) for p in self.train_paths], "tune": [str(p) for p in self.tune_paths],
                     "labels": self.labels, "transfer": cfg.get("transfer")}  # fmt: skip
        self.loss = ISLLoss(int(data["margin"]))

    def build_model(self):
        from deepflows.nn.models import build_model

        model = self.cfg["model"]
        built = build_model(model["architecture"], model["options"], self.planes, self.cfg["training"]["seed"])
        if self.shape[0] % built.multiple:
            raise UserError(f"data.shift {self.shift}: windows of {self.shape[0]} px after the crop; "
                            f"{model['architecture']} needs a multiple of {built.multiple}")  # fmt: skip
        if self.cfg.get("transfer"):
            self._copy_trunk(built, self.cfg["transfer"]["model"])
        return built

    def _copy_trunk(self, model, path: str) -> None:
        """Every weight of the trained model at `path` except the head's into `model`."""
        import jax.numpy as jnp
        from flax import nnx

        from deepflows.config import resolve_shipped
        from deepflows.nn.model_dir import load_model

        source, meta = load_model(resolve_shipped(path))
        if meta["architecture"] != self.cfg["model"]["architecture"] or list(meta["input_shape"]) != self.shape:
            raise UserError(f"transfer.model {path}: a {meta['architecture']} model of input {meta['input_shape']}; "
                            f"this run trains {self.cfg['model']['architecture']} on {self.shape}")  # fmt: skip
        theirs = dict(nnx.to_flat_state(nnx.state(source, nnx.Param)))
        mine = nnx.state(model, nnx.Param)
        copied = []
        for path_, var in nnx.to_flat_state(mine):
            if path_[0] != "head" and path_ in theirs and theirs[path_].get_value().shape == var.get_value().shape:
                var.set_value(jnp.asarray(theirs[path_].get_value(), jnp.float32))
                copied.append(path_)
        if not copied:
            raise UserError(f"transfer.model {path}: no weight fits this model's options")
        nnx.update(model, mine)
        self.transferred = {"model": path, "sha256": meta["sha256"], "labels": meta.get("labels"),
                            "weights_copied": len(copied)}  # fmt: skip

    def batches(self, step: int):
        """Windows drawn at random and cropped at a random offset (one per step)."""
        seed, size = self.cfg["training"]["seed"], self.cfg["training"]["batch_size"]
        keep = self.x.shape[1] - self.shift
        while True:
            rng = np.random.default_rng([seed, step])
            pick = np.sort(rng.choice(len(self.x), size, replace=False))
            oy, ox = rng.integers(0, self.shift + 1, 2)
            crop = (pick, slice(oy, oy + keep), slice(ox, ox + keep))
            yield self.x[crop].astype(np.float32), self.y[crop].astype(np.float32)
            step += 1

    def train_metrics(self, aux: dict, examples: int) -> dict:
        return {"rmse": float(np.sqrt(aux["se"] / aux["values"]))}

    def predict_windows(self, model, x: np.ndarray, y: np.ndarray, batch: int = 4) -> tuple[np.ndarray, float]:
        """(predicted means [N, c, c, labels] of the windows' scored centres, the mean loss against y)."""
        step = _eval_step(self.loss.margin)
        means, losses = [], []
        for start in range(0, len(x), batch):
            xb = x[start:start + batch].astype(np.float32)
            yb = y[start:start + batch].astype(np.float32)
            loss, mean = step(model, xb, yb)
            means.append(np.asarray(mean))
            losses.append(float(loss) * len(xb))
        return np.concatenate(means), sum(losses) / len(x)

    def evaluate(self, model) -> dict:
        means, loss = self.predict_windows(model, self.tune_x, self.tune_y)
        truth = scored(self.tune_y, self.loss.margin).astype(np.float32)
        rs = {label: pearson(means[..., i], truth[..., i]) for i, label in enumerate(self.labels)}
        known = [r for r in rs.values() if r is not None]
        return {"loss": loss, "pearson": float(np.mean(known)) if known else None,
                **{f"r_{label}": r for label, r in rs.items()},
                "rmse": float(np.sqrt(np.mean((means - truth) ** 2)))}  # fmt: skip

    def better(self, new: dict, best: dict | None) -> bool:
        if best is None:
            return True
        if self.cfg["evaluation"]["select_by"] == "pearson" and new["pearson"] != best["pearson"]:
            return (new["pearson"] or -1.0) > (best["pearson"] or -1.0)
        return new["loss"] < best["loss"]

    def describe(self, result: dict) -> str:
        rs = ", ".join(f"{label} r {result[f'r_{label}']:.3f}" for label in self.labels
                       if result[f"r_{label}"] is not None)  # fmt: skip
        return f"loss {result['loss']:.4f}, rmse {result['rmse']:.4f}, {rs}"

    def summary(self) -> str:
        return (f"{len(self.x)} training windows of {self.shape[0]} px x {self.planes} planes from "
                f"{len(self.train_paths)} shards, {len(self.tune_x)} tune windows; labels {', '.join(self.labels)}")

    def model_meta(self) -> dict:
        meta = {"name": "in-silico-labeling", "labels": self.labels, "bins": BINS, "margin": self.loss.margin,
                "normalization": self.attrs.get("normalization"), "patches": self.attrs,
                "training_data": self.data}  # fmt: skip
        if getattr(self, "transferred", None):
            meta["transfer"] = self.transferred
        return meta


@functools.lru_cache(maxsize=4)
def _eval_step(margin: int):
    """Jitted (model, x, y) -> (loss, predicted means) over every pixel of the windows' scored centres."""
    from flax import nnx

    @nnx.jit
    def step(model, x, y):
        out = model(x, crop=margin)
        return pixel_loss(out, scored(y, margin)), predicted_mean(out)

    return step
