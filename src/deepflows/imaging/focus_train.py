"""`deepflows focus-train`: train the focus-quality model on synthetically defocused in-focus fields.

    deepflows focus-train --images 'DIR/*a0[1-6]*.png' --out resources/models/focus-quality --workdir runs/focus
                          [--config YAML] [--steps N] [--batch-size B] [--learning-rate LR] [--eval-every N]
                          [--val-columns PX] [--seed S] [--model-options JSON] [--init MODEL_DIR]
                          [--rps-weight W] [--select loss|within_one] [--stop-at N]

Each step draws a fresh batch of augmented patches (deepflows.imaging.focus_data; a pure function of seed
and step). The loss is cross-entropy plus the ranked probability score (the squared distance between the
predicted and true cumulative distributions over the ordered levels), which charges a prediction two
levels off more than one level off; --rps-weight scales that term (at weight 1 it is a small fraction of the
loss: a confident one-level miss costs 0.1). Every --eval-every steps the model is scored on the validation
columns of the same fields (never seen in training); the best model by --select (validation loss, or
within-one accuracy on the validation patches with content, ties broken by loss) is exported, its weights as
float16, to --workdir/model and copied to --out. --init starts from a model directory's
weights (a fresh warmup and cosine schedule over --steps; recorded in model.json `init`).

This module is the focus task (deepflows.nn.task); the training loop is deepflows.nn.loop's, so --workdir holds
run.json, checkpoints/ (every --eval-every steps), best/, model/, metrics.jsonl and metrics.png, and a killed run
rerun with the same command resumes and ends with the same weights as an uninterrupted run. A workdir holding
a run with other settings or images is refused. --stop-at N stops after step N (then rerun without it).

--config takes the same settings as YAML (JSON Schema: `schema()`: data.images, data.val_columns, model.options,
optimizer, schedule, training, evaluation, init); the options given on the command line override it. The
defaults are the options' defaults below.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import logging

import numpy as np

from deepflows.arguments import non_negative_float, positive_float, positive_int, seed
from deepflows.errors import UserError
from deepflows.nn.task import Task, stream_at_step

log = logging.getLogger("deepflows.focus_train")


def level_metrics(predicted: np.ndarray, true: np.ndarray) -> dict:
    """Exact and within-one accuracy, and Spearman's rho of predicted vs true level."""
    from scipy.stats import spearmanr

    predicted, true = np.asarray(predicted), np.asarray(true)
    rho = spearmanr(predicted, true).statistic if len(set(predicted)) > 1 else 0.0
    return {"n": len(true), "exact": float(np.mean(predicted == true)),
            "within_one": float(np.mean(np.abs(predicted - true) <= 1)), "spearman": float(rho)}  # fmt: skip


# ----------------------------------------------------------------------------- config and CLI


@functools.cache
def schema() -> dict:
    """The focus-train config's JSON Schema: the loop's keys with focus defaults, and the focus task's own."""
    from deepflows.nn.loop import config_schema

    data = {
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "properties": {
            "images": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                       "description": "in-focus fields: directories, globs or files"},
            "val_columns": {"type": "integer", "minimum": 1, "default": 168,
                            "description": "right-hand columns of each field kept for validation"},
        },
    }  # fmt: skip
    rps = {"type": "number", "minimum": 0, "default": 1.0, "description": "weight of the ranked probability score"}
    return config_schema(
        "deepflows focus-train config", ["focus_cnn"], ("loss", "within_one"), training={"rps_weight": rps},
        evaluation={}, sections={"data": data}, model_default={"architecture": "focus_cnn", "options": {"dropout": 0.5}},
        defaults={"training": {"steps": 600, "checkpoint_every": 50, "log_every": 50, "keep_checkpoints": 2},
                  "evaluation": {"every": 50}, "optimizer": {"clip_norm": 1.0},
                  "schedule": {"learning_rate": 3e-4, "warmup_steps": 50}},
    )  # fmt: skip


# option -> the config key it sets
OPTIONS = {"images": ("data", "images"), "val_columns": ("data", "val_columns"), "steps": ("training", "steps"),
           "batch_size": ("training", "batch_size"), "seed": ("training", "seed"),
           "rps_weight": ("training", "rps_weight"), "learning_rate": ("schedule", "learning_rate"),
           "select": ("evaluation", "select_by"), "model_options": ("model", "options")}  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", nargs="+", help="in-focus fields: directory, glob or files (data.images)")
    p.add_argument("--out", required=True, help="model directory to write (model.json + weights.msgpack)")
    p.add_argument("--workdir", required=True, help="checkpoints, metrics and the exported model; a rerun resumes")
    p.add_argument("--config", metavar="YAML", help="settings as YAML (see the module doc); the options override it")
    p.add_argument("--steps", type=positive_int, help="training.steps (default 600)")
    p.add_argument("--batch-size", type=positive_int, help="training.batch_size (default 64)")
    p.add_argument("--learning-rate", type=positive_float, help="schedule.learning_rate (default 3e-4)")
    p.add_argument("--eval-every", type=positive_int,
                   help="evaluate, log and checkpoint every N steps (evaluation.every, training.log_every and "
                        "checkpoint_every; default 50)")  # fmt: skip
    p.add_argument("--val-columns", type=positive_int, help="right-hand columns of each field kept for validation (168)")
    p.add_argument("--seed", type=seed, help="training.seed (default 0)")
    p.add_argument("--model-options", type=json.loads,
                   help='focus_cnn options as JSON (default {"dropout": 0.5}; e.g. smaller widths for tests)')  # fmt: skip
    p.add_argument("--init", help="start from this focus model's weights (a continued run) instead of at random")
    p.add_argument("--rps-weight", type=non_negative_float, help="weight of the ranked probability score (default 1)")
    p.add_argument("--select", choices=("loss", "within_one"),
                   help="validation figure that picks the exported step: loss (default), or within-one accuracy "
                        "(then loss)")  # fmt: skip
    p.add_argument("--stop-at", type=positive_int, help="stop after this step (checkpointed; rerun without it to go on)")


def focus_config(args: argparse.Namespace) -> dict:
    """The validated config: --config (if any) with the command line's options in place."""
    from deepflows.config import read_yaml
    from deepflows.nn.loop import load_config, override

    raw = read_yaml(args.config) if args.config else {}
    if not isinstance(raw, dict):
        raise UserError(f"{args.config}: expected a mapping of keys at the top level")
    settings = [(section, key, getattr(args, option)) for option, (section, key) in OPTIONS.items()]
    if args.eval_every is not None:
        settings += [(section, key, args.eval_every) for section, key in (("evaluation", "every"),
                     ("training", "log_every"), ("training", "checkpoint_every"))]  # fmt: skip
    for section, key, value in settings:
        if value is not None:
            if not isinstance(raw.setdefault(section, {}), dict):
                raise UserError(f"{args.config}: {section}: expected a mapping of keys, not {raw[section]!r}")
            raw[section][key] = value
    if isinstance(raw.get("model"), dict):  # the one architecture this task trains, whether named or not
        raw["model"].setdefault("architecture", "focus_cnn")
    cfg = load_config(raw, schema(), args.config or "focus-train options")
    if "images" not in cfg["data"]:
        raise UserError("focus-train: no training images; give --images, or data.images in --config")
    return override(cfg, init=args.init)


def run(args: argparse.Namespace) -> None:
    from deepflows.nn.loop import fit
    from deepflows.nn.model_dir import publish_model

    summary = fit(FocusTask(focus_config(args)), args.workdir, stop_at=args.stop_at,
                  command=getattr(args, "command_line", "deepflows focus-train"))  # fmt: skip
    if "model" not in summary:  # stopped early (--stop-at): nothing to export yet
        return
    out = publish_model(summary, args.out)
    log.info("best step %d (val loss %.3f) -> %s in %.0f s", summary["best_step"],
             (summary["tune_metrics"] or {}).get("loss", float("nan")), out, summary["wall_seconds"])  # fmt: skip


# ----------------------------------------------------------------------------- the task


def loss_terms(logits, labels):
    """Per patch: cross-entropy, and the ranked probability score (over the ordered levels, in [0, 1])."""
    import jax
    import jax.numpy as jnp
    import optax

    from deepflows.imaging.defocus import LEVELS

    probs = jax.nn.softmax(logits)
    onehot = jax.nn.one_hot(labels, LEVELS)
    ce = optax.softmax_cross_entropy(logits, onehot)
    rps = jnp.sum((jnp.cumsum(probs, -1) - jnp.cumsum(onehot, -1)) ** 2, -1) / (LEVELS - 1)
    return ce, rps


@dataclasses.dataclass(frozen=True)
class FocusLoss:
    """Mean cross-entropy + rps_weight x ranked probability score of patches [B, p, p] and their levels; aux: the
    exact predictions. Frozen: the jitted step is compiled once per weight."""

    rps_weight: float

    def __call__(self, model, batch, constants):
        import jax.numpy as jnp

        x, y = batch
        logits = model(x[..., None])
        ce, rps = loss_terms(logits, y)
        return jnp.mean(ce + self.rps_weight * rps), {"correct": jnp.sum(jnp.argmax(logits, axis=-1) == y)}


class FocusTask(Task):
    """focus_cnn on augmented patches of defocused fields; validated on the fields' right-hand columns."""

    inputs_name = "training images"
    rng = staticmethod(stream_at_step)  # as the loop this task had before the shared one: same weights per seed
    # float16 weights in the shipped file: 58 MB instead of 116 MB (the dense layer alone has 28.9M weights), under
    # the 100 MB a file may have on common git hosts. Layers compute in float32 regardless (Flax promotes float16
    # weights to the float32 inputs); ratings change by far less than a level.
    export_dtype = np.float16
    plotted = {"train": ("accuracy",), "tune": ("within_one", "exact"), "loss": "loss (cross-entropy + w x RPS)"}

    def __init__(self, cfg: dict):
        from deepflows.imaging.focus_data import DefocusSet, load_field
        from deepflows.imaging.focus_model import PATCH
        from deepflows.imaging.io import expand_images

        self.cfg, self.shape, self.channels = cfg, [PATCH, PATCH, 1], ["intensity"]
        paths = expand_images(cfg["data"]["images"])
        self.data = {"training_data": [{"path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                                       for p in paths]}  # fmt: skip
        self.fields = DefocusSet([load_field(p) for p in paths], val_columns=cfg["data"]["val_columns"])
        self.val_x, self.val_y, _, self.val_content = self.fields.grid(seed=cfg["training"]["seed"] + 1, columns="val")
        self.loss = FocusLoss(float(cfg["training"]["rps_weight"]))

    def batches(self, step: int):
        seed, size = self.cfg["training"]["seed"], self.cfg["training"]["batch_size"]
        while True:
            step += 1  # the generator of step k (0-based) is seeded with k + 1, as focus-train always did
            yield self.fields.sample(np.random.default_rng([seed, step]), size)

    def train_metrics(self, aux: dict, examples: int) -> dict:
        return {"accuracy": float(aux["correct"] / examples)}

    def evaluate(self, model) -> dict:
        import jax.numpy as jnp

        from deepflows.imaging.focus_model import Scorer

        probs = Scorer(model)(self.val_x)
        ce, rps = (np.asarray(t) for t in loss_terms(jnp.log(jnp.clip(probs, 1e-9)), self.val_y))
        content = self.val_content
        return {"loss": float(np.mean(ce + self.loss.rps_weight * rps)), "rps": float(np.mean(rps)),
                **level_metrics(probs[content].argmax(-1), self.val_y[content])}  # fmt: skip

    def better(self, new: dict, best: dict | None) -> bool:
        """Lower loss, or (select_by within_one) higher within-one accuracy, then lower loss."""
        if best is None:
            return True
        if self.cfg["evaluation"]["select_by"] == "within_one" and new["within_one"] != best["within_one"]:
            return new["within_one"] > best["within_one"]
        return new["loss"] < best["loss"]

    def describe(self, result: dict) -> str:
        return (f"loss {result['loss']:.3f}, exact {result['exact']:.3f}, within-one {result['within_one']:.3f}, "
                f"Spearman {result['spearman']:.3f}")  # fmt: skip

    def summary(self) -> str:
        fields = len(self.data["training_data"])
        return f"{fields} fields, {len(self.val_y)} validation patches ({int(self.val_content.sum())} with content)"

    def model_meta(self) -> dict:
        from deepflows.imaging.defocus import LEVELS, RADIUS_PER_LEVEL

        return {"name": "focus-quality", "levels": LEVELS, "training_data": self.data["training_data"],
                "defocus": {"psf": "airy", "radius_px_per_level": RADIUS_PER_LEVEL, "noise": "poisson, gain 1"}}  # fmt: skip
