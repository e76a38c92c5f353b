"""`deepflows train`: train a pileup classifier on a training store, resumable from its workdir.

    deepflows train --examples train.zarr --config config/model/small_cnn.yaml --workdir runs/small_cnn
                    [--steps N] [--seed S] [--init MODEL_DIR] [--stop-at STEP]

The store is one made by `deepflows shuffle-examples` (splits `train` and `tune`). The config (YAML,
validated against the schema below; config/model/*.yaml are examples) names the architecture and its
options, the optimizer and learning-rate schedule, batch size, steps, class weighting or balanced
sampling, evaluation and checkpoint intervals, and the seed.

This module is the pileup task (deepflows.nn.task): batches streamed from the store as a pure function of
(seed, step) (deepflows.nn.data), class-weighted cross-entropy with label smoothing, tune metrics (loss,
accuracy, balanced accuracy, recall per class, confusion), and a temperature calibration in the exported
model.json. The training loop (deepflows.nn.loop) does the rest: the workdir (run.json, checkpoints/, best/,
model/, metrics.jsonl, metrics.png), exact resumption after preemption (SIGTERM: a checkpoint after the
current step, exit status 130), warm start (`init: {model: MODEL_DIR}` or --init, as DeepVariant trains its
exome model from the WGS checkpoint: config/model/read_set_finetune.yaml), several devices.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
from pathlib import Path

import numpy as np

from deepflows.errors import UserError
from deepflows.nn.task import Task
from deepflows.nn.warm_start import init_mismatch as _init_mismatch
from deepflows.store.examples import realigned

log = logging.getLogger("deepflows.train")

CLASS_NAMES = ("hom_ref", "het", "hom_alt")
NOISE_DROPOUT_STREAM = 7  # a third seed word: the hidden-noise draws are independent of the batch order

TRAINING = {
    "class_weights": {
        "anyOf": [{"enum": ["none", "inverse_frequency"]},
                  {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 3, "maxItems": 3}],
        "default": "inverse_frequency",
        "description": "loss weight per class (hom-ref, het, hom-alt): none, inverse_frequency "
                       "(n / (classes * n_class) from the train split) or three numbers",
    },
    "sampling": {"enum": ["shuffled", "balanced"], "default": "shuffled",
                 "description": "balanced: draw each class equally often (with class_weights none)"},
    "label_smoothing": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.0},
    "shuffle_buffer": {"type": "integer", "minimum": 1, "default": 1024,
                       "description": "examples shuffled together (rounded up to whole chunks)"},
    "noise_dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.0,
                      "description": "share of each batch's examples whose sample noise is hidden, so that "
                                     "a model with options.unknown_noise learns to call without it"},
}  # fmt: skip
EVALUATION = {
    "max_examples": {"type": ["integer", "null"], "minimum": 1, "default": None,
                     "description": "evaluate on the first N tune examples (null: all)"},
    "batch_size": {"type": ["integer", "null"], "minimum": 1, "default": None,
                   "description": "null: training.batch_size"},
}  # fmt: skip


@functools.cache
def schema() -> dict:
    """The config's JSON Schema, built on first use (it lists the registered architectures)."""
    from deepflows.nn.loop import config_schema
    from deepflows.nn.models import ARCHITECTURES

    return config_schema("deepflows training config", ARCHITECTURES, ("loss", "accuracy", "balanced_accuracy"),
                         training=TRAINING, evaluation=EVALUATION)  # fmt: skip


def load_train_config(config: str | Path | dict, source: str | None = None) -> dict:
    """A validated training config with defaults filled in; one line naming the key for anything wrong."""
    from deepflows.config import ConfigError
    from deepflows.nn.loop import load_config

    source = source or ("config" if isinstance(config, dict) else str(config))
    cfg = load_config(config, schema(), source)
    t = cfg["training"]
    if t["sampling"] == "balanced" and t["class_weights"] != "none":
        raise ConfigError(f"{source}: training.sampling: balanced already evens out the classes; "
                          "set training.class_weights: none")  # fmt: skip
    if t["noise_dropout"] and not cfg["model"]["options"].get("unknown_noise"):
        raise ConfigError(f"{source}: training.noise_dropout hides the sample noise from a model that cannot "
                          "do without it; set model.options.unknown_noise: true")  # fmt: skip
    return cfg


# ----------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--examples", required=True, metavar="STORE",
                   help="training store (made by shuffle-examples) with train and tune splits")
    p.add_argument("--config", required=True, metavar="YAML", help="training config, e.g. config/model/small_cnn.yaml")
    p.add_argument("--workdir", required=True, metavar="DIR",
                   help="checkpoints, metrics and the exported model (DIR/model); rerun to resume")
    p.add_argument("--steps", type=int, metavar="N", help="override training.steps")
    p.add_argument("--seed", type=int, metavar="S", help="override training.seed")
    p.add_argument("--init", metavar="MODEL_DIR",
                   help="override init.model: start from this exported model's weights (fine-tuning); "
                        "a resumed run restores its own checkpoint instead")  # fmt: skip
    p.add_argument("--stop-at", type=int, metavar="STEP",
                   help="save a checkpoint at STEP and exit without exporting, as if preempted (rerun to go on)")


def run(args: argparse.Namespace) -> None:
    summary = train(args.examples, args.config, args.workdir, steps=args.steps, seed=args.seed, stop_at=args.stop_at,
                    init=args.init, command=getattr(args, "command_line", "deepflows train"))  # fmt: skip
    log.info("%s", json.dumps(summary))


def train(examples, config, workdir, *, steps: int | None = None, seed: int | None = None, stop_at: int | None = None,
          init: str | None = None, command: str = "deepflows train") -> dict:  # fmt: skip
    """Train (or resume) in `workdir`; returns a summary. See the module docstring."""
    from deepflows.nn.loop import fit, override

    cfg = override(load_train_config(config), steps=steps, seed=seed, init=init)
    return fit(PileupTask(examples, cfg), workdir, stop_at=stop_at, command=command)


# ----------------------------------------------------------------------------- the task


def class_weights(cfg: dict, counts: np.ndarray) -> np.ndarray:
    setting = cfg["training"]["class_weights"]
    if setting == "none":
        return np.ones(len(CLASS_NAMES), np.float32)
    if setting == "inverse_frequency":
        present = counts > 0
        weights = np.where(present, counts.sum() / (present.sum() * np.maximum(counts, 1)), 0.0)
        return weights.astype(np.float32)
    return np.asarray(setting, np.float32)


def pileup_loss(model, batch, constants):
    """Class-weighted, label-smoothed cross-entropy of (images, labels, sample noise); aux: the correct predictions."""
    import jax
    import jax.numpy as jnp
    import optax

    from deepflows.nn.models import pileup_logits

    images, labels, noise = batch
    weights, smoothing = constants
    logits = pileup_logits(model, images, noise)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, len(CLASS_NAMES)), smoothing)
    loss = jnp.mean(weights[labels] * optax.softmax_cross_entropy(logits, targets))
    return loss, {"correct": jnp.sum(jnp.argmax(logits, axis=-1) == labels)}


class PileupTask(Task):
    """A pileup classifier on a training store's train split, evaluated on its tune split."""

    inputs_name = "training store"
    plotted = {"train": ("accuracy",), "tune": ("accuracy", "balanced_accuracy"), "loss": "loss (cross-entropy)"}

    def __init__(self, examples, cfg: dict):
        import math

        from deepflows.nn.data import BatchStream, open_split, store_fingerprint

        t, ev = cfg["training"], cfg["evaluation"]
        self.cfg, self.loss = cfg, pileup_loss
        self.train_split, self.tune_split = open_split(examples, "train"), None
        if ev["every"]:
            self.tune_split = open_split(examples, "tune")
            if self.tune_split.n == 0:
                raise UserError(f"{examples}: the tune split is empty (make the store with --tune-regions, "
                                "or set evaluation.every: 0 to export the final weights)")  # fmt: skip
        if self.train_split.n == 0:
            raise UserError(f"{examples}: the train split is empty")
        options = cfg["model"]["options"]
        if options.get("sample_noise") and not options.get("unknown_noise"):
            for split in filter(None, (self.train_split, self.tune_split)):
                _check_sample_noise(split)
        self.data = {"store": store_fingerprint(examples)}
        self.shape, self.channels, self.examples = self.train_split.shape, self.train_split.channels, self.train_split.n
        self.weights = class_weights(cfg, self.train_split.class_counts)
        self.stream = BatchStream(self.train_split, t["batch_size"], t["seed"], sampling=t["sampling"],
                                  window_chunks=math.ceil(t["shuffle_buffer"] / self.train_split.chunk))  # fmt: skip
        self.eval_batch = ev["batch_size"] or t["batch_size"]

    def constants(self):
        return self.weights, np.float32(self.cfg["training"]["label_smoothing"])

    def batches(self, step: int):
        rate, seed = self.cfg["training"]["noise_dropout"], self.cfg["training"]["seed"]
        for at, (images, labels, noise) in enumerate(self.stream.batches(step), start=step):
            if rate:  # a pure function of (seed, step), as the batch itself: a resumed run hides the same
                hide = np.random.default_rng([seed, at, NOISE_DROPOUT_STREAM]).random(len(noise)) < rate
                noise = np.where(hide, np.float32(np.nan), noise)
            yield images, labels, noise

    def position(self, step: int) -> dict:
        return self.stream.position(step)

    def train_metrics(self, aux: dict, examples: int) -> dict:
        return {"accuracy": float(aux["correct"] / examples)}

    def evaluate(self, model) -> dict:
        return evaluate(model, self.tune_split, self.eval_batch, self.cfg["evaluation"]["max_examples"])

    def describe(self, result: dict) -> str:
        recall = {k: round(v, 4) if v is not None else None for k, v in result["recall"].items()}
        return (f"loss {result['loss']:.4f} accuracy {result['accuracy']:.4f} balanced "
                f"{result['balanced_accuracy'] or 0.0:.4f} recall {recall}")  # fmt: skip

    def summary(self) -> str:
        classes = dict(zip(CLASS_NAMES, map(int, self.train_split.class_counts)))
        return f"{self.examples} train examples {classes}, class weights {np.round(self.weights, 3).tolist()}"

    def check_init(self, meta: dict) -> str | None:
        problem = _init_mismatch(meta, self.cfg, self.train_split)
        if not problem and "realign" in meta and bool(meta["realign"]) != realigned(self.train_split.attrs):
            log.warning("init.model %s was trained on examples made %s --realign, the training store's were made "
                        "%s it", self.cfg["init"]["model"],
                        *(("with", "without") if meta["realign"] else ("without", "with")))  # fmt: skip
        return problem

    def model_meta(self) -> dict:
        split = self.train_split
        return {
            "realign": realigned(split.attrs),
            "class_names": list(CLASS_NAMES),
            "training_data": {**self.data["store"], "train_examples": split.n,
                              "train_classes": dict(zip(CLASS_NAMES, map(int, split.class_counts))),
                              "tune_examples": self.tune_split.n if self.tune_split else 0},
            "class_weights": [round(float(w), 6) for w in self.weights],
        }  # fmt: skip

    def export_meta(self, model) -> dict:
        return {"calibration": calibrate(model, self.tune_split, self.eval_batch,
                                         self.cfg["evaluation"]["max_examples"])}  # fmt: skip


def _check_sample_noise(split) -> None:
    missing = int(np.isnan(split.noise).sum())
    if missing:
        raise UserError(f"{split.store}/{split.name}: {missing} of {split.n} examples have no sample noise (shards "
                        "made before make-examples measured it, or over too few homopolymer runs); "
                        "model.options.sample_noise needs it for every example")  # fmt: skip


# ----------------------------------------------------------------------------- evaluation


@functools.cache
def _predict_step():
    """The jitted forward pass, built once per process."""
    from flax import nnx

    from deepflows.nn.models import pileup_logits

    return nnx.jit(pileup_logits)


def split_logits(model, split, batch_size: int, max_examples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N, 3] float64, labels [N]) of the model (in eval mode) over a split."""
    from deepflows.nn.data import eval_batches

    logits, labels = [], []
    for images, y, noise, valid in eval_batches(split, batch_size, max_examples):
        logits.append(np.asarray(_predict_step()(model, images, noise), np.float64)[:valid])
        labels.append(np.asarray(y[:valid]))
    if not logits:
        return np.zeros((0, len(CLASS_NAMES))), np.zeros(0, np.int64)
    return np.concatenate(logits), np.concatenate(labels)


def evaluate(model, split, batch_size: int, max_examples: int | None = None) -> dict:
    """Loss (mean cross-entropy), accuracy, balanced accuracy, recall per class and confusion on a split."""
    from deepflows.nn.calibration import mean_nll

    logits, labels = split_logits(model, split, batch_size, max_examples)
    n = len(labels)
    confusion = np.zeros((len(CLASS_NAMES), len(CLASS_NAMES)), np.int64)
    np.add.at(confusion, (labels, logits.argmax(axis=1)), 1)
    totals = confusion.sum(axis=1)
    recall = {name: (float(confusion[i, i] / totals[i]) if totals[i] else None) for i, name in enumerate(CLASS_NAMES)}
    present = [r for r in recall.values() if r is not None]
    return {
        "examples": n,
        "loss": mean_nll(logits, labels) if n else 0.0,
        "accuracy": float(np.trace(confusion) / max(n, 1)),
        "balanced_accuracy": float(np.mean(present)) if present else None,
        "recall": recall,
        "confusion": confusion.tolist(),
    }


def calibrate(model, split, batch_size: int, max_examples: int | None = None) -> dict:
    """Temperature scaling fitted on the tune split (deepflows.nn.calibration); GQ and QUAL use it."""
    from deepflows.nn.calibration import fit_temperature, mean_nll

    logits, labels = split_logits(model, split, batch_size, max_examples)
    temperature = fit_temperature(logits, labels)
    return {"method": "temperature", "temperature": round(temperature, 4), "fitted_on": "tune split",
            "examples": len(labels), "tune_loss": round(mean_nll(logits, labels), 5),
            "tune_loss_calibrated": round(mean_nll(logits, labels, temperature), 5)}  # fmt: skip
