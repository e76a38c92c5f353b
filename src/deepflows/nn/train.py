"""`deepflows train`: train a pileup classifier on a training store, resumable from its workdir.

    deepflows train --examples train.zarr --config config/model/small_cnn.yaml --workdir runs/small_cnn
                    [--steps N] [--seed S] [--init MODEL_DIR] [--stop-at STEP]

The store is one made by `deepflows shuffle-examples` (splits `train` and `tune`). The config (YAML,
validated against SCHEMA below; config/model/*.yaml are examples) names the architecture and its
options, the optimizer and learning-rate schedule, batch size, steps, class weighting or balanced
sampling, evaluation and checkpoint intervals, and the seed.

Fine-tuning: `init: {model: MODEL_DIR}` in the config (or `--init MODEL_DIR`) starts a fresh run from an
exported model directory's weights instead of a random init, as DeepVariant trains its exome model from
the WGS checkpoint (config/model/read_set_finetune.yaml). The model directory must hold the config's
architecture and options and read examples of the store's shape and channel order. Only step 0 loads it:
a resumed run restores its own checkpoint. run.json, metrics.jsonl (a step-0 line of split "init", with
the starting weights' tune metrics) and the exported model.json (`init`) record the directory and the
sha256 of its weights.

Workdir:

    DIR/run.json          what this workdir trains: the config (defaults filled in) and the store's
                          fingerprint; a rerun with another config or store is refused
    DIR/checkpoints/N/    Orbax checkpoints every training.checkpoint_every steps (model parameters
                          and batch statistics, optimizer state, step; metadata: data position, seed,
                          best tune metrics so far, wall time); the last training.keep_checkpoints kept
    DIR/best/             the best model so far by evaluation.select_by on the tune split
    DIR/model/            the exported model (deepflows.nn.model_dir: weights.msgpack + model.json),
                          written when training completes
    DIR/metrics.jsonl     one line per log interval (split "train": loss, accuracy, lr, speed) and
                          per evaluation (split "tune": loss, accuracy, balanced accuracy, recall per
                          class, confusion matrix)
    DIR/metrics.png       loss and accuracy against step

Resuming: rerun the same command. Training continues from the latest complete checkpoint and ends
with the same weights as a run that was never interrupted: the batches are a pure function of
(seed, step) (see deepflows.nn.data), the dropout key is fold_in(key(seed), step), and the model and
optimizer state are restored exactly. SIGTERM or Ctrl-C (e.g. Slurm preemption) saves a checkpoint
after the current step and exits with status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np

from deepflows.errors import UserError
from deepflows.nn.optim import OPTIMIZER_SCHEMA, SCHEDULE_SCHEMA
from deepflows.store.examples import realigned

log = logging.getLogger("deepflows.train")

CLASS_NAMES = ("hom_ref", "het", "hom_alt")
RUN_JSON = "run.json"
METRICS = "metrics.jsonl"
# Keys that may change between a run and its resumption: they do not change the weights.
RESUMABLE_KEYS = {
    ("training", "steps"),
    ("training", "checkpoint_every"),
    ("training", "keep_checkpoints"),
    ("training", "log_every"),
    ("training", "prefetch"),
    ("evaluation", "batch_size"),
}


def _schema() -> dict:
    from deepflows.nn.models import ARCHITECTURES

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "deepflows training config",
        "type": "object",
        "additionalProperties": False,
        "required": ["model"],
        "properties": {
            "model": {
                "type": "object",
                "additionalProperties": False,
                "required": ["architecture"],
                "properties": {
                    "architecture": {"enum": list(ARCHITECTURES)},
                    "options": {"type": "object", "default": {},
                                "description": "keyword arguments of the architecture, e.g. widths, dropout"},
                },
            },
            "init": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "required": ["model"],
                "properties": {
                    "model": {"type": "string", "minLength": 1,
                              "description": "an exported model directory (model.json + weights.msgpack); a "
                                             "relative path is looked up in the working directory, then in "
                                             "the deepflows checkout (shipped models)"},
                },
                "description": "fine-tuning: start a fresh run from this model's weights (same architecture, "
                               "options, input shape and channel order) instead of a random init; absent or "
                               "null: random init. A resumed run restores its own checkpoint instead",
            },
            "optimizer": OPTIMIZER_SCHEMA,
            "schedule": SCHEDULE_SCHEMA,
            "training": {
                "type": "object",
                "additionalProperties": False,
                "default": {},
                "properties": {
                    "batch_size": {"type": "integer", "minimum": 1, "default": 64},
                    "steps": {"type": "integer", "minimum": 1, "default": 10000},
                    "seed": {"type": "integer", "minimum": 0, "default": 0},
                    "class_weights": {
                        "anyOf": [{"enum": ["none", "inverse_frequency"]},
                                  {"type": "array", "items": {"type": "number", "minimum": 0},
                                   "minItems": 3, "maxItems": 3}],
                        "default": "inverse_frequency",
                        "description": "loss weight per class (hom-ref, het, hom-alt): none, inverse_frequency "
                                       "(n / (classes * n_class) from the train split) or three numbers",
                    },
                    "sampling": {"enum": ["shuffled", "balanced"], "default": "shuffled",
                                 "description": "balanced: draw each class equally often (with class_weights none)"},
                    "label_smoothing": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.0},
                    "shuffle_buffer": {"type": "integer", "minimum": 1, "default": 1024,
                                       "description": "examples shuffled together (rounded up to whole chunks)"},
                    "checkpoint_every": {"type": "integer", "minimum": 1, "default": 500},
                    "keep_checkpoints": {"type": "integer", "minimum": 1, "default": 3},
                    "log_every": {"type": "integer", "minimum": 1, "default": 50},
                    "prefetch": {"type": "integer", "minimum": 1, "default": 2,
                                 "description": "batches prepared ahead by a background thread"},
                },
            },
            "evaluation": {
                "type": "object",
                "additionalProperties": False,
                "default": {},
                "properties": {
                    "every": {"type": "integer", "minimum": 0, "default": 500,
                              "description": "evaluate on the tune split every N steps and at the end; 0: never "
                                             "(the final weights are exported)"},
                    "max_examples": {"type": ["integer", "null"], "minimum": 1, "default": None,
                                     "description": "evaluate on the first N tune examples (null: all)"},
                    "batch_size": {"type": ["integer", "null"], "minimum": 1, "default": None,
                                   "description": "null: training.batch_size"},
                    "select_by": {"enum": ["loss", "accuracy", "balanced_accuracy"], "default": "loss",
                                  "description": "the tune metric that picks the exported model"},
                },
            },
        },
    }  # fmt: skip


SCHEMA = None  # built on first use (it lists the registered architectures)


def load_train_config(config: str | Path | dict, source: str | None = None) -> dict:
    """A validated training config with defaults filled in; one line naming the key for anything wrong."""
    from deepflows.config import ConfigError, read_yaml, validate_config

    global SCHEMA
    SCHEMA = SCHEMA or _schema()
    if isinstance(config, dict):
        raw, source = config, source or "config"
    else:
        if not Path(config).is_file():
            raise ConfigError(f"{config}: training config not found")
        raw, source = read_yaml(config), source or str(config)
    cfg = validate_config(raw, source, SCHEMA, combinations=False)
    if cfg.get("init", ...) is None:  # init: null is a random init, as without the key (run.json stays as it was)
        del cfg["init"]
    t = cfg["training"]
    if t["sampling"] == "balanced" and t["class_weights"] != "none":
        raise ConfigError(f"{source}: training.sampling: balanced already evens out the classes; "
                          "set training.class_weights: none")  # fmt: skip
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


# ----------------------------------------------------------------------------- pieces


def _first_difference(a, b, path=()) -> tuple | None:
    """The first key path where two JSON-like values differ (None if equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return (*path, key)
            found = _first_difference(a[key], b[key], (*path, key))
            if found:
                return found
        return None
    return None if a == b else path


def _strip(cfg: dict) -> dict:
    """The config without the keys that may change on resumption."""
    out = json.loads(json.dumps(cfg))
    for section, key in RESUMABLE_KEYS:
        out.get(section, {}).pop(key, None)
    return out


def _get(d: dict, path: tuple):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return "(absent)"
        d = d[key]
    return d


def class_weights(cfg: dict, counts: np.ndarray) -> np.ndarray:
    setting = cfg["training"]["class_weights"]
    if setting == "none":
        return np.ones(len(CLASS_NAMES), np.float32)
    if setting == "inverse_frequency":
        present = counts > 0
        weights = np.where(present, counts.sum() / (present.sum() * np.maximum(counts, 1)), 0.0)
        return weights.astype(np.float32)
    return np.asarray(setting, np.float32)


def _init_mismatch(meta: dict, cfg: dict, split) -> str | None:
    """What keeps a model directory (its model.json) from starting this run: the first of architecture,
    options (with the architecture's defaults filled in on both sides), input shape and channel order that
    differs, with both values; None if it fits."""
    from deepflows.nn.models import architecture_options

    ours = cfg["model"]["architecture"]
    if meta["architecture"] != ours:
        return f"its architecture {meta['architecture']!r} differs from the config's model.architecture {ours!r}"
    defaults = architecture_options(ours)
    theirs, mine = ({**defaults, **options} for options in (meta["options"], cfg["model"]["options"]))
    theirs, mine = json.loads(json.dumps(theirs, default=str)), json.loads(json.dumps(mine, default=str))
    for key in sorted(set(theirs) | set(mine)):
        if theirs.get(key, "(absent)") != mine.get(key, "(absent)"):
            return (f"its options.{key} {json.dumps(theirs.get(key, '(absent)'))} differs from the config's "
                    f"model.options.{key} {json.dumps(mine.get(key, '(absent)'))}")  # fmt: skip
    if list(meta["input_shape"]) != list(split.shape):
        return f"its input_shape {list(meta['input_shape'])} differs from the training store's {list(split.shape)}"
    if list(meta["channels"]) != list(split.channels):
        return f"its channels {list(meta['channels'])} differ from the training store's {list(split.channels)}"
    return None


def start_from(path: str, model, cfg: dict, split) -> dict:
    """Put the weights of the model directory `path` (init.model) into the freshly built `model`, in place
    (fine-tuning); {"model": path, "sha256": of its weights, as its model.json records it}. One line when the
    directory is not a model or does not fit the config and store (see _init_mismatch)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from deepflows.config import resolve_shipped
    from deepflows.nn.model_dir import _weight_state, load_model, model_description

    where = resolve_shipped(path)
    try:
        problem = _init_mismatch(model_description(where), cfg, split)
        if problem:
            raise UserError(f"{where}: {problem}; fine-tuning needs a model of the config's architecture and "
                            "options that reads the store's input shape and channel order")  # fmt: skip
        source, meta = load_model(where)  # checks the weights' sha256 and that they fit the architecture
    except UserError as err:
        raise UserError(f"init.model: {err}") from None
    if "realign" in meta and bool(meta["realign"]) != realigned(split.attrs):
        log.warning("init.model %s was trained on examples made %s --realign, the training store's were made %s it",
                    path, *(("with", "without") if meta["realign"] else ("without", "with")))  # fmt: skip
    # Cast to the fresh model's dtypes (float32): a model exported as float16 (as focus_train.half_precision does)
    # would otherwise train in float16, where Adam's updates overflow.
    target = nnx.state(model, _weight_state())
    weights = nnx.to_pure_dict(nnx.state(source, _weight_state()))
    nnx.replace_by_pure_dict(target, jax.tree.map(lambda want, got: jnp.asarray(got, dtype=want.dtype),
                                                  nnx.to_pure_dict(target), weights))  # fmt: skip
    nnx.update(model, target)
    return {"model": path, "sha256": meta["sha256"]}


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished directory into place (the previous one, if any, goes only once the new one is there)."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _workdir_lock(workdir: Path):
    import fcntl

    with open(workdir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"{workdir}: another deepflows train is running in this workdir") from None
        yield


class _StopRequest:
    """SIGTERM / SIGINT -> finish the step, checkpoint, exit (a second SIGINT interrupts at once)."""

    def __init__(self):
        self.signal: int | None = None
        self.previous = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        log.warning("%s: checkpointing after this step, then stopping", signal.Signals(signum).name)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


# ----------------------------------------------------------------------------- jitted steps


def _reseed(model, key) -> None:
    """Every random stream of the model (dropout) gets a key derived from `key`."""
    from flax import nnx

    tags = {node.key.tag for _, node in nnx.iter_graph(model) if isinstance(node, nnx.RngStream)}
    if tags:
        nnx.reseed(model, **dict.fromkeys(tags, key))


def _steps():
    """(train_step, predict_step), jitted once per process."""
    global _STEPS
    if _STEPS is None:
        import jax
        import jax.numpy as jnp
        import optax
        from flax import nnx

        @nnx.jit
        def train_step(model, optimizer, images, labels, weights, smoothing, seed_step):
            _reseed(model, jax.random.fold_in(jax.random.key(seed_step[0]), seed_step[1]))

            def loss_fn(model):
                logits = model(images)
                targets = optax.smooth_labels(jax.nn.one_hot(labels, len(CLASS_NAMES)), smoothing)
                return jnp.mean(weights[labels] * optax.softmax_cross_entropy(logits, targets)), logits

            (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
            optimizer.update(model, grads)
            return loss, jnp.sum(jnp.argmax(logits, axis=-1) == labels)

        @nnx.jit
        def predict_step(model, images):
            return model(images)

        _STEPS = (train_step, predict_step)
    return _STEPS


_STEPS = None


@functools.lru_cache(maxsize=8)
def _transform(settings: str, steps: int):
    """(schedule, optax transform) for a config, shared by runs with the same settings in one process:
    the transform is static in the jitted train step, so an equal object reuses its compilation."""
    from deepflows.nn.optim import make_optimizer, make_schedule

    settings = json.loads(settings)
    schedule = make_schedule(settings["schedule"], steps)
    return schedule, make_optimizer(settings["optimizer"], schedule)


def split_logits(model, split, batch_size: int, max_examples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N, 3] float64, labels [N]) of the model in eval mode over a split."""
    from deepflows.nn.data import eval_batches

    _, predict_step = _steps()
    model.eval()
    logits, labels = [], []
    try:
        for images, y, valid in eval_batches(split, batch_size, max_examples):
            logits.append(np.asarray(predict_step(model, images), np.float64)[:valid])
            labels.append(np.asarray(y[:valid]))
    finally:
        model.train()
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


def _better(metric: str, new: dict, best: dict | None) -> bool:
    if best is None:
        return True
    if metric == "loss":
        return new["loss"] < best["loss"]
    return (new[metric] or 0.0) > (best[metric] or 0.0)


# ----------------------------------------------------------------------------- checkpoints


class Checkpoints:
    """Orbax checkpoints of (model parameters + batch statistics, optimizer state, optionally an `extra`
    pytree of arrays that must change in step with them) plus JSON metadata."""

    def __init__(self, directory: Path, keep: int):
        import orbax.checkpoint as ocp

        self.ocp = ocp
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(directory.resolve(), options=options)

    @staticmethod
    def _state(model, optimizer, extra=None) -> dict:
        from flax import nnx

        weights = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
        state = {"model": nnx.to_pure_dict(weights), "optimizer": nnx.to_pure_dict(nnx.state(optimizer))}
        return state if extra is None else {**state, "extra": extra}

    @staticmethod
    def exist(directory: Path) -> bool:
        """Whether a directory holds any finished checkpoint (a step-numbered subdirectory)."""
        return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, model, optimizer, meta: dict, extra=None) -> None:
        args = self.ocp.args
        state = self._state(model, optimizer, extra)
        self.manager.save(step, args=args.Composite(state=args.StandardSave(state), meta=args.JsonSave(meta)),
                          force=True)  # fmt: skip

    def restore(self, step: int, model, optimizer, extra=None) -> tuple[dict, object]:
        """Loads the model and optimizer in place; (meta, the saved `extra`, shaped like the one given)."""
        import jax
        from flax import nnx

        args = self.ocp.args
        target = jax.tree.map(self.ocp.utils.to_shape_dtype_struct, self._state(model, optimizer, extra))
        restored = self.manager.restore(step, args=args.Composite(state=args.StandardRestore(target),
                                                                  meta=args.JsonRestore()))  # fmt: skip
        weights = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
        nnx.replace_by_pure_dict(weights, restored["state"]["model"])
        nnx.update(model, weights)
        opt_state = nnx.state(optimizer)
        nnx.replace_by_pure_dict(opt_state, restored["state"]["optimizer"])
        nnx.update(optimizer, opt_state)
        return dict(restored["meta"]), restored["state"].get("extra")

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


# ----------------------------------------------------------------------------- metrics


class MetricsLog:
    """DIR/metrics.jsonl, cut back to the resumed step so a resumed run does not repeat lines."""

    def __init__(self, path: Path, start_step: int):
        self.path = path
        kept = []
        if path.exists() and start_step > 0:  # a fresh run keeps nothing (a killed attempt's step-0 line)
            for line in path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    if json.loads(line)["step"] <= start_step:
                        kept.append(line)
        path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


def plot_metrics(metrics: Path, out: Path) -> None:
    """Loss and accuracy of train (per log interval) and tune (per evaluation) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for split, style in (("train", "-"), ("tune", "o-")):
        rows = [r for r in records if r.get("split") == split]
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        ax_loss.plot(steps, [r["loss"] for r in rows], style, label=split, markersize=3)
        ax_acc.plot(steps, [r["accuracy"] for r in rows], style, label=f"{split} accuracy", markersize=3)
        if split == "tune":
            ax_acc.plot(steps, [r["balanced_accuracy"] for r in rows], "s--", label="tune balanced accuracy",
                        markersize=3)  # fmt: skip
    start = [r for r in records if r.get("split") == "init" and "loss" in r]
    if start:  # fine-tuning: the starting weights on the tune split
        ax_loss.plot([0], [start[0]["loss"]], "*", label="tune, init model", markersize=8)
        ax_acc.plot([0], [start[0]["accuracy"]], "*", label="tune accuracy, init model", markersize=8)
    ax_loss.set(xlabel="step", ylabel="loss (cross-entropy)", title="loss")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(out)


# ----------------------------------------------------------------------------- the loop


def train(examples, config, workdir, *, steps: int | None = None, seed: int | None = None, stop_at: int | None = None,
          init: str | None = None, command: str = "deepflows train") -> dict:  # fmt: skip
    """Train (or resume) in `workdir`; returns a summary. See the module docstring."""
    from deepflows.nn.data import open_split, store_fingerprint
    from deepflows.nn.model_dir import write_json
    from deepflows.nn.models import build_model

    for noisy in ("absl", "jax._src.xla_bridge"):  # Orbax's per-save lines; JAX looking for a TPU
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg = load_train_config(config)
    if steps is not None:
        if steps < 1:
            raise UserError(f"--steps {steps}: must be at least 1")
        cfg["training"]["steps"] = steps
    if seed is not None:
        if seed < 0:
            raise UserError(f"--seed {seed}: must not be negative")
        cfg["training"]["seed"] = seed
    if init is not None:
        if not init:
            raise UserError("--init: give a model directory")
        cfg["init"] = {"model": str(init)}
    t, ev = cfg["training"], cfg["evaluation"]
    total = t["steps"]
    if stop_at is not None and not 1 <= stop_at:
        raise UserError(f"--stop-at {stop_at}: must be at least 1")
    if cfg["schedule"]["name"] == "warmup_cosine":  # record what the schedule really uses
        cfg["schedule"]["decay_steps"] = cfg["schedule"]["decay_steps"] or total

    train_split = open_split(examples, "train")
    tune_split = None
    if ev["every"]:
        tune_split = open_split(examples, "tune")
        if tune_split.n == 0:
            raise UserError(f"{examples}: the tune split is empty (make the store with --tune-regions, "
                            "or set evaluation.every: 0 to export the final weights)")  # fmt: skip
    if train_split.n == 0:
        raise UserError(f"{examples}: the train split is empty")
    store = store_fingerprint(examples)
    # Built before the workdir is touched, so a wrong model option fails without leaving anything behind.
    model = build_model(cfg["model"]["architecture"], cfg["model"]["options"], len(train_split.channels),
                        cfg["training"]["seed"])  # fmt: skip
    # Fine-tuning: a fresh run starts from init.model's weights (checked, like the options, before the workdir is
    # touched); a resumed run restores its checkpoint and takes what it started from from run.json.
    started_from = None
    if "init" in cfg and not Checkpoints.exist(Path(workdir) / "checkpoints"):
        started_from = start_from(cfg["init"]["model"], model, cfg, train_split)

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with _workdir_lock(workdir):
        run_json = workdir / RUN_JSON
        loaded = started_from is not None
        if run_json.exists() and Checkpoints.exist(workdir / "checkpoints"):
            previous = json.loads(run_json.read_text())
            if previous.get("store", {}).get("sha256") != store["sha256"]:
                raise UserError(f"{workdir}: holds a run on another training store ({previous['store']['path']}); "
                                "use another --workdir or remove this one")  # fmt: skip
            where = _first_difference(_strip(previous["config"]), _strip(cfg))
            if where:
                key = ".".join(map(str, where))
                hint = " (set schedule.decay_steps to change --steps on resume)" if key == "schedule.decay_steps" else ""
                raise UserError(f"{workdir}: holds a checkpointed run with a different config ({key}: "
                                f"{_get(previous['config'], where)!r} there, {_get(cfg, where)!r} here){hint}; "
                                "refusing to resume: use another --workdir or remove this one")  # fmt: skip
            if "init" in cfg:
                started_from = previous.get("init") or started_from
                if started_from is None:  # a run.json that lacks it (edited): the directory's model.json
                    from deepflows.config import resolve_shipped
                    from deepflows.nn.model_dir import model_description

                    sha = model_description(resolve_shipped(cfg["init"]["model"]))["sha256"]
                    started_from = {"model": cfg["init"]["model"], "sha256": sha}
        record = {"config": cfg, "store": store, **({"init": started_from} if started_from else {})}
        write_json(run_json, {**record, "command": command})
        return _train(cfg, model, train_split, tune_split, store, workdir, stop_at, command, started_from, loaded)


def _train(cfg, model, train_split, tune_split, store, workdir: Path, stop_at, command, started_from=None,
           loaded=False) -> dict:  # fmt: skip
    import jax
    from flax import nnx
    from tqdm import tqdm

    from deepflows import __version__
    from deepflows.nn.data import BatchStream, Prefetcher
    from deepflows.nn.model_dir import load_model, save_model

    t, ev = cfg["training"], cfg["evaluation"]
    total, seed, batch_size = t["steps"], t["seed"], t["batch_size"]
    for leftover in (*workdir.glob(".best.tmp-*"), *workdir.glob(".model.tmp-*"), *workdir.glob(".*.old-*")):
        shutil.rmtree(leftover, ignore_errors=True)  # from a killed run (the workdir is locked: none is live)
    counts = train_split.class_counts
    weights = class_weights(cfg, counts)
    schedule, tx = _transform(json.dumps({"schedule": cfg["schedule"], "optimizer": cfg["optimizer"]},
                                         sort_keys=True), total)  # fmt: skip
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    checkpoints = Checkpoints(workdir / "checkpoints", t["keep_checkpoints"])

    start, best, wall_before = 0, None, 0.0
    latest = checkpoints.latest()
    if latest is not None:
        if latest > total:
            raise UserError(f"{workdir}: its latest checkpoint is at step {latest}, beyond --steps {total}")
        meta, _ = checkpoints.restore(latest, model, optimizer)
        start, best, wall_before = meta["step"], meta["best"], meta["wall_seconds"]
        log.info("resuming from %s at step %d (%d examples seen)", workdir / "checkpoints", start,
                 meta["data"]["examples_seen"])  # fmt: skip
    end = min(total, stop_at) if stop_at else total
    model.train()

    stream = BatchStream(train_split, batch_size, seed, window_chunks=math.ceil(t["shuffle_buffer"] / train_split.chunk),
                         sampling=t["sampling"])  # fmt: skip
    metrics = MetricsLog(workdir / METRICS, start)
    # The cached partial skips re-walking the model and optimizer graphs on every step.
    train_step = nnx.cached_partial(_steps()[0], model, optimizer)
    best_dir = workdir / "best"
    base_meta = {
        "architecture": cfg["model"]["architecture"],
        "options": cfg["model"]["options"],
        "input_shape": train_split.shape,
        "channels": train_split.channels,
        "realign": realigned(train_split.attrs),
        "class_names": list(CLASS_NAMES),
        "training_data": {**store, "train_examples": train_split.n,
                          "train_classes": dict(zip(CLASS_NAMES, map(int, counts))),
                          "tune_examples": tune_split.n if tune_split else 0},
        "training_config": cfg,
        "class_weights": [round(float(w), 6) for w in weights],
        "command": command,
        "deepflows_version": __version__,
        "jax_version": jax.__version__,
        "hardware": [f"{d.platform}:{d.device_kind}" for d in jax.devices()],
        **({"init": started_from} if started_from else {}),
    }  # fmt: skip
    log.info("%s on %s: %d train examples %s, class weights %s, batch %d, steps %d..%d of %d",
             cfg["model"]["architecture"], base_meta["hardware"][0], train_split.n,
             base_meta["training_data"]["train_classes"], np.round(weights, 3).tolist(), batch_size, start, end,
             total)  # fmt: skip
    fresh = loaded and start == 0  # this process put init.model's weights into the model, and trains from step 0
    if started_from:
        log.info("fine-tuning: %s %s (weights sha256 %s)%s", "starting from" if fresh else "started from",
                 started_from["model"], started_from["sha256"],
                 "" if fresh else f"; resumed at step {start} from its own checkpoint")  # fmt: skip
    eval_batch = ev["batch_size"] or batch_size
    if fresh:  # the step-0 line: where the run started, and how the starting weights do on tune
        result = evaluate(model, tune_split, eval_batch, ev["max_examples"]) if tune_split is not None else {}
        metrics.write({"step": 0, "split": "init", **started_from, **result})
        if result:
            log.info("init model on tune: loss %.4f accuracy %.4f balanced %.4f", result["loss"], result["accuracy"],
                     result["balanced_accuracy"] or 0.0)  # fmt: skip

    started, plotted = time.perf_counter(), -math.inf

    def checkpoint(step: int) -> None:
        meta = {"step": step, "seed": seed, "data": stream.position(step),
                "rng": f"dropout key fold_in(key({seed}), step); batches a function of (seed, step)",
                "best": best, "wall_seconds": wall_before + time.perf_counter() - started}  # fmt: skip
        checkpoints.save(step, model, optimizer, meta)

    smoothing = np.float32(t["label_smoothing"])
    pending: list = []
    t_log, step_log = time.perf_counter(), start
    bar = tqdm(total=total, initial=start, unit="step", disable=None, dynamic_ncols=True, desc="train")
    # The background thread also copies each batch to the device, overlapping the transfer with the step.
    batches = Prefetcher((jax.device_put(b) for b in stream.batches(start)), depth=t["prefetch"])
    stopped = None
    try:
        with _StopRequest() as stop:
            for step in range(start, end):
                images, labels = next(batches)
                loss, correct = train_step(images, labels, weights, smoothing, np.array([seed, step], np.uint32))
                pending.append((loss, correct))
                done = step + 1
                bar.update(1)
                if done % t["log_every"] == 0 or done == end:
                    values = jax.device_get(pending)
                    now = time.perf_counter()
                    record = {
                        "step": done, "split": "train",
                        "loss": float(np.mean([v[0] for v in values])),
                        "accuracy": float(sum(int(v[1]) for v in values) / (len(values) * batch_size)),
                        "lr": float(schedule(step)),
                        "steps_per_s": round((done - step_log) / (now - t_log), 3),
                        "examples_per_s": round((done - step_log) * batch_size / (now - t_log), 1),
                        "epoch": round(done * batch_size / train_split.n, 3),
                    }  # fmt: skip
                    metrics.write(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}",
                                    lr=f"{record['lr']:.2e}")  # fmt: skip
                    if bar.disable:
                        log.info("step %d/%d loss %.4f accuracy %.3f lr %.3g, %.1f examples/s", done, total,
                                 record["loss"], record["accuracy"], record["lr"], record["examples_per_s"])  # fmt: skip
                    pending, t_log, step_log = [], now, done
                if tune_split is not None and (done % ev["every"] == 0 or done == total):
                    result = evaluate(model, tune_split, eval_batch, ev["max_examples"])
                    improved = _better(ev["select_by"], result, best)
                    if improved:
                        best = {**result, "step": done}
                        tmp = workdir / f".best.tmp-{os.getpid()}"
                        shutil.rmtree(tmp, ignore_errors=True)
                        save_model(tmp, model, {**base_meta, "steps": done, "tune_metrics": result})
                        _replace_dir(tmp, best_dir)
                    metrics.write({"step": done, "split": "tune", "best": improved,
                                   **{k: v for k, v in result.items()}})  # fmt: skip
                    if time.perf_counter() - plotted > 60:  # a plot costs ~0.5 s; the last comes at the end
                        plot_metrics(workdir / METRICS, workdir / "metrics.png")
                        plotted = time.perf_counter()
                    log.info("step %d tune: loss %.4f accuracy %.4f balanced %.4f recall %s%s", done, result["loss"],
                             result["accuracy"], result["balanced_accuracy"] or 0.0,
                             {k: round(v, 4) if v is not None else None for k, v in result["recall"].items()},
                             " (best so far)" if improved else "")  # fmt: skip
                if done % t["checkpoint_every"] == 0 or done == end or stop.signal is not None:
                    checkpoint(done)
                if stop.signal is not None:
                    stopped = (done, signal.Signals(stop.signal).name)
                    break
    finally:
        batches.close()
        bar.close()
        checkpoints.wait()
        checkpoints.close()
    if (workdir / METRICS).stat().st_size:
        plot_metrics(workdir / METRICS, workdir / "metrics.png")
    wall = wall_before + time.perf_counter() - started
    if stopped:
        log.warning("stopped by %s at step %d; checkpoint saved: rerun the same command to resume", stopped[1],
                    stopped[0])  # fmt: skip
        raise KeyboardInterrupt
    last = max(start, end)
    if last < total:
        log.info("stopped at step %d of %d as asked (--stop-at); rerun without it to go on", last, total)
        return {"stopped_at": last, "steps": total, "workdir": str(workdir),
                **({"init": started_from} if started_from else {})}

    # Export: the best model by the tune metric, or the final weights without evaluation.
    meta = {**base_meta, "steps": total, "wall_seconds": round(wall, 2)}
    if tune_split is not None:
        if best is None or not (best_dir / "model.json").is_file():
            raise UserError(f"{workdir}: no best model to export (best/ is missing); remove the workdir and retrain")
        export, _ = load_model(best_dir)
        meta.update(best_step=best["step"], selected_by=f"tune {ev['select_by']}",
                    tune_metrics={k: v for k, v in best.items() if k != "step"},
                    calibration=calibrate(export, tune_split, eval_batch, ev["max_examples"]))  # fmt: skip
    else:
        export = model
        meta.update(best_step=total, selected_by="final step (no evaluation)", tune_metrics=None)
    tmp = workdir / f".model.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    meta = save_model(tmp, export, meta)
    _replace_dir(tmp, workdir / "model")
    log.info("model (step %d of %d, %s) -> %s", meta["best_step"], total, meta["selected_by"], workdir / "model")
    return {"model": str(workdir / "model"), "steps": total, "best_step": meta["best_step"],
            "tune_metrics": meta["tune_metrics"], "wall_seconds": meta["wall_seconds"], "sha256": meta["sha256"],
            **({"init": started_from} if started_from else {})}
