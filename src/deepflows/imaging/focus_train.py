"""`deepflows focus-train`: train the focus-quality model on synthetically defocused in-focus fields.

    deepflows focus-train --images 'DIR/*a0[1-6]*.png' --out resources/models/focus-quality --workdir runs/focus
                          [--steps N] [--batch-size B] [--learning-rate LR] [--val-columns PX] [--seed S]
                          [--model-options JSON] [--init MODEL_DIR] [--rps-weight W] [--select loss|within_one]

Each step draws a fresh batch of augmented patches (deepflows.imaging.focus_data; a pure function of seed
and step). The loss is cross-entropy plus the ranked probability score (the squared distance between the
predicted and true cumulative distributions over the ordered levels), which charges a prediction two
levels off more than one level off; --rps-weight scales that term (at weight 1 it is a small fraction of the
loss: a confident one-level miss costs 0.1). Every --eval-every steps the model is scored on the validation
columns of the same fields (never seen in training); the best model by --select (validation loss, or
within-one accuracy on the validation patches with content, ties broken by loss) is exported to --out
(deepflows.nn.model_dir) with the run's provenance. --init continues from a model this command wrote (a
fresh warmup and cosine schedule over --steps; recorded in model.json).

--workdir gets metrics.jsonl and, at every evaluation, an Orbax checkpoint (weights, optimizer state, the
best weights so far and the dropout stream's position): a killed run, rerun with the same command, resumes
from its last evaluation and ends with the same weights as an uninterrupted run. A workdir holding a run
with other settings is refused. --stop-at N stops after step N (then rerun without it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np

from deepflows.arguments import non_negative_float, positive_float, positive_int, seed
from deepflows.errors import UserError
from deepflows.imaging.io import expand_images

log = logging.getLogger("deepflows.focus_train")


def level_metrics(predicted: np.ndarray, true: np.ndarray) -> dict:
    """Exact and within-one accuracy, and Spearman's rho of predicted vs true level."""
    from scipy.stats import spearmanr

    predicted, true = np.asarray(predicted), np.asarray(true)
    rho = spearmanr(predicted, true).statistic if len(set(predicted)) > 1 else 0.0
    return {"n": len(true), "exact": float(np.mean(predicted == true)),
            "within_one": float(np.mean(np.abs(predicted - true) <= 1)), "spearman": float(rho)}  # fmt: skip


def better(row: dict, best: dict, select: str) -> bool:
    """Whether a validation row beats the best so far: lower loss, or higher within-one then lower loss."""
    if select == "within_one" and row["val_within_one"] != best["val_within_one"]:
        return row["val_within_one"] > best["val_within_one"]
    return row["val_loss"] < best["val_loss"]


def half_precision(params):
    """Parameters as float16 for the shipped file: 58 MB instead of 116 MB (the dense layer alone has 28.9M
    weights), under the 100 MB a file may have on common git hosts. Layers compute in float32 regardless
    (Flax promotes float16 weights to the float32 inputs); ratings change by far less than a level."""
    import jax

    return jax.tree.map(lambda a: a.astype(np.float16), params)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", nargs="+", required=True, help="in-focus fields: directory, glob or files")
    p.add_argument("--out", required=True, help="model directory to write (model.json + weights.msgpack)")
    p.add_argument("--workdir", required=True, help="metrics.jsonl and checkpoints/; a rerun resumes from them")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=positive_float, default=3e-4)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--val-columns", type=positive_int, default=168, help="right-hand columns of each field kept for validation")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--model-options", type=json.loads, default={"dropout": 0.5},
                   help='focus_cnn options as JSON (default {"dropout": 0.5}; e.g. smaller widths for tests)')  # fmt: skip
    p.add_argument("--init", help="start from this focus model's weights (a continued run) instead of at random")
    p.add_argument("--rps-weight", type=non_negative_float, default=1.0, help="weight of the ranked probability score in the loss")
    p.add_argument("--select", choices=("loss", "within_one"), default="loss",
                   help="validation figure that picks the exported step: loss, or within-one accuracy (then loss)")  # fmt: skip
    p.add_argument("--stop-at", type=int, help="stop after this step (checkpointed; rerun without it to go on)")


def run(args: argparse.Namespace) -> None:
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from deepflows.imaging.defocus import LEVELS, RADIUS_PER_LEVEL
    from deepflows.imaging.focus_data import DefocusSet, load_field
    from deepflows.imaging.focus_model import PATCH, Scorer
    from deepflows.nn.model_dir import save_model
    from deepflows.nn.models import build_model
    from deepflows.nn.optim import make_optimizer, make_schedule
    from deepflows.nn.train import Checkpoints, MetricsLog

    if args.steps < 1 or args.batch_size < 1 or args.eval_every < 1 or (args.stop_at is not None and args.stop_at < 1):
        raise UserError("--steps, --batch-size, --eval-every and --stop-at must be at least 1")
    started = time.time()
    paths = expand_images(args.images)
    training_data = [{"path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in paths]
    data = DefocusSet([load_field(p) for p in paths], val_columns=args.val_columns)
    val_x, val_y, _, val_content = data.grid(seed=args.seed + 1, columns="val")
    log.info("%d fields, %d validation patches (%d with content)", len(paths), len(val_y), val_content.sum())

    options = args.model_options
    model = build_model("focus_cnn", options, channels=1, seed=args.seed)
    init = None
    if args.init:
        from deepflows.nn.model_dir import load_model

        start, init = load_model(args.init)
        if init["architecture"] != "focus_cnn" or init["options"] != options:
            raise UserError(f"{args.init}: not a focus_cnn model with options {options}")
        # Shipped weights are float16 (half_precision): train in float32, else Adam's updates overflow to NaN.
        nnx.update(model, jax.tree.map(lambda a: a.astype(jnp.float32), nnx.state(start, nnx.Param)))
        model.train()
    schedule = make_schedule({"name": "warmup_cosine", "learning_rate": args.learning_rate, "warmup_steps": 50,
                              "decay_steps": None, "end_learning_rate": 0.0}, args.steps)  # fmt: skip
    tx = make_optimizer({"name": "adamw", "weight_decay": 1e-4, "b1": 0.9, "b2": 0.999, "eps": 1e-8,
                         "clip_norm": 1.0}, schedule)  # fmt: skip
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    def loss_terms(logits, labels):
        probs = jax.nn.softmax(logits)
        onehot = jax.nn.one_hot(labels, LEVELS)
        ce = optax.softmax_cross_entropy(logits, onehot)
        rps = jnp.sum((jnp.cumsum(probs, -1) - jnp.cumsum(onehot, -1)) ** 2, -1) / (LEVELS - 1)
        return ce, rps

    @nnx.jit
    def train_step(model, optimizer, x, y):
        def loss_fn(model):
            ce, rps = loss_terms(model(x[..., None]), y)
            return jnp.mean(ce + args.rps_weight * rps)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # What must match for a checkpoint to be continued (the data by content, not by path).
    settings = {"training_data": [d["sha256"] for d in training_data], "init": init and init["sha256"],
                **{k: getattr(args, k) for k in ("steps", "batch_size", "learning_rate", "eval_every", "val_columns",
                                                 "seed", "model_options", "rps_weight", "select")}}  # fmt: skip
    checkpoints = Checkpoints(workdir / "checkpoints", keep=2)
    # best_state holds the initial weights until the first evaluation replaces them (best is None until then).
    start, best, best_state, wall_before, losses = 0, None, _host_copy(model, nnx.Param), 0.0, []
    latest = checkpoints.latest()
    if latest is not None:
        template = {"best": _host_copy(model, nnx.Param), "rng": _host_copy(model, nnx.RngCount)}
        saved, extra = checkpoints.restore(latest, model, optimizer, extra=template)
        if saved["settings"] != json.loads(json.dumps(settings)):
            raise UserError(f"{workdir}: holds checkpoints of a run with other settings or images; "
                            "rerun that command, or use another --workdir")  # fmt: skip
        start, best, best_state, wall_before = saved["step"], saved["best"], extra["best"], saved["wall_seconds"]
        losses = saved["losses"]  # since the last evaluation, when --stop-at fell between two
        counts = nnx.state(model, nnx.RngCount)
        nnx.replace_by_pure_dict(counts, extra["rng"])
        nnx.update(model, counts)
        log.info("resuming from %s at step %d", workdir / "checkpoints", start)
    metrics = MetricsLog(workdir / "metrics.jsonl", start)
    end = min(args.steps, args.stop_at or args.steps)
    for step in range(start + 1, end + 1):
        x, y = data.sample(np.random.default_rng([args.seed, step]), args.batch_size)
        losses.append(float(train_step(model, optimizer, jnp.asarray(x), jnp.asarray(y))))
        evaluated = step % args.eval_every == 0 or step == args.steps
        if evaluated:
            model.eval()
            probs = Scorer(model)(val_x)
            model.train()
            ce, rps = (np.asarray(t) for t in loss_terms(jnp.log(jnp.clip(probs, 1e-9)), val_y))
            row = {"step": step, "train_loss": float(np.mean(losses)),
                   "val_loss": float(np.mean(ce + args.rps_weight * rps)), "val_rps": float(np.mean(rps)),
                   "lr": float(schedule(step - 1)), "elapsed_s": round(wall_before + time.time() - started, 1),
                   **{f"val_{k}": v for k, v in level_metrics(probs[val_content].argmax(-1), val_y[val_content]).items()}}  # fmt: skip
            losses = []
            metrics.write(row)
            log.info("step %d: train loss %.3f, val loss %.3f, val exact %.3f, within-one %.3f", step,
                     row["train_loss"], row["val_loss"], row["val_exact"], row["val_within_one"])  # fmt: skip
            if best is None or better(row, best, args.select):
                best, best_state = row, _host_copy(model, nnx.Param)
        if evaluated or step == end:
            meta = {"step": step, "best": best, "settings": settings, "losses": losses,
                    "wall_seconds": wall_before + time.time() - started}  # fmt: skip
            carried = {"best": best_state, "rng": _host_copy(model, nnx.RngCount)}
            checkpoints.save(step, model, optimizer, meta, extra=carried)
    checkpoints.wait()
    checkpoints.close()
    if end < args.steps:
        log.info("stopped at step %d of %d as asked (--stop-at); rerun without it to go on", end, args.steps)
        return
    params = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(params, best_state)
    nnx.update(model, half_precision(params))
    model.eval()
    meta = {
        "name": "focus-quality",
        "architecture": "focus_cnn",
        "options": options,
        "input_shape": [PATCH, PATCH, 1],
        "channels": ["intensity"],
        "levels": LEVELS,
        "defocus": {"psf": "airy", "radius_px_per_level": RADIUS_PER_LEVEL, "noise": "poisson, gain 1"},
        "training_data": training_data,
        "command": getattr(args, "command_line", None),
        "steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "val_columns": args.val_columns,
        "rps_weight": args.rps_weight, "select": args.select,
        "selected": best,
        "initialised_from": init and {"path": str(args.init), "sha256": init["sha256"], "steps": init["steps"],
                                      "command": init["command"], "wall_time_s": init["wall_time_s"],
                                      "initialised_from": init.get("initialised_from")},
        "wall_time_s": round(wall_before + time.time() - started, 1),
        "hardware": f"{platform.processor() or platform.machine()}, {jax.devices()[0].platform}",
    }  # fmt: skip
    save_model(args.out, model, meta)
    log.info(
        "best step %d (val loss %.3f) -> %s in %.0f s", best["step"], best["val_loss"], args.out, meta["wall_time_s"]
    )


def _host_copy(model, kind) -> dict:
    """A host copy of the model's variables of one kind (nnx.Param; nnx.RngCount, how far each random
    stream has advanced, its key being a function of the seed alone) as a pure dict, as checkpoints store."""
    import jax
    from flax import nnx

    return jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model, kind)))
