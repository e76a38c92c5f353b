"""The one training loop: `fit(task, workdir)` trains a task (deepflows.nn.task) in a workdir it can resume from.

The task brings the model, the batches, the loss and the metrics; everything else is here. Workdir:

    DIR/run.json          what this workdir trains: the config (defaults filled in) and the task's data; a
                          rerun with another config or other data (compared without paths) is refused
    DIR/checkpoints/N/    Orbax checkpoints every training.checkpoint_every steps (model parameters and batch
                          statistics, optimizer state, step; metadata: data position, seed, best tune metrics
                          so far, wall time); the last training.keep_checkpoints kept
    DIR/best/             the best model so far by evaluation.select_by on the tune split
    DIR/model/            the exported model (deepflows.nn.model_dir: weights.msgpack + model.json), written when
                          training completes: best/, or the final weights without evaluation
    DIR/metrics.jsonl     one line per log interval (split "train": loss, the task's train metrics, lr, speed)
                          and per evaluation (split "tune": the task's metrics); "init": a warm start
    DIR/metrics.png       loss and the task's metrics against step

Resuming: rerun the same command. Training continues from the latest complete checkpoint and ends with the
same weights as a run that was never interrupted: the batches and the random streams are functions of (seed,
step) (the task's contract), and the model and optimizer state are restored exactly. SIGTERM or Ctrl-C (e.g.
Slurm preemption) saves a checkpoint after the current step and exits with status 130; SIGKILL loses the steps
since the last checkpoint, no more.

Optimizer and schedule: optimizer and schedule sections (deepflows.nn.optim). training.accumulate k splits each
batch into k equal microbatches whose gradients are averaged before one update: the same mean loss, the
memory of a k-th of the batch (batch statistics and dropout are per microbatch). With several devices (GPUs,
or XLA_FLAGS=--xla_force_host_platform_device_count=N on a CPU), the model and optimizer state are
replicated on each and every batch is split across them along its first axis (data parallelism; XLA adds up
the gradients); the batch size must be a multiple of the device count.

Warm start: `init: {model: DIR}` (deepflows.nn.warm_start) starts a fresh run from an exported model's
weights; run.json, model.json (`init`) and a step-0 line of metrics.jsonl (split "init", the starting
weights' tune metrics) record it.
"""

from __future__ import annotations

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
from deepflows.nn.task import RNG_POLICIES

log = logging.getLogger("deepflows.train")

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

# ----------------------------------------------------------------------------- config

INIT_SCHEMA = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "required": ["model"],
    "properties": {
        "model": {"type": "string", "minLength": 1,
                  "description": "an exported model directory (model.json + weights.msgpack); a relative path is "
                                 "looked up in the working directory, then in the deepflows checkout (shipped models)"},
    },
    "description": "fine-tuning: start a fresh run from this model's weights (same architecture, options, input "
                   "shape and channel order) instead of a random init; absent or null: random init. A resumed run "
                   "restores its own checkpoint instead",
}  # fmt: skip

TRAINING_PROPERTIES = {
    "batch_size": {"type": "integer", "minimum": 1, "default": 64},
    "steps": {"type": "integer", "minimum": 1, "default": 10000},
    "seed": {"type": "integer", "minimum": 0, "default": 0},
    "accumulate": {"type": "integer", "minimum": 1,
                   "description": "split each batch into this many equal microbatches and average their gradients "
                                  "before one update (memory of a microbatch); absent: 1"},
    "checkpoint_every": {"type": "integer", "minimum": 1, "default": 500},
    "keep_checkpoints": {"type": "integer", "minimum": 1, "default": 3},
    "log_every": {"type": "integer", "minimum": 1, "default": 50},
    "prefetch": {"type": "integer", "minimum": 1, "default": 2,
                 "description": "batches prepared ahead by a background thread"},
}  # fmt: skip


def config_schema(title: str, architectures, select_by, *, training: dict, evaluation: dict, sections=None,
                  defaults=None, model_default=None) -> dict:  # fmt: skip
    """The JSON Schema of a task's config: model, init, optimizer, schedule, and training and evaluation with
    the loop's keys and the task's (`training`, `evaluation`: more properties), `select_by` (the tune metrics
    that may pick the exported model, the first the default) and the task's own `sections`. `defaults`
    ({section: {key: value}}) replaces defaults of the shared keys; `model_default` makes the model section
    optional, with that default."""
    model = {
        "type": "object",
        "additionalProperties": False,
        "required": ["architecture"],
        "properties": {
            "architecture": {"enum": list(architectures)},
            "options": {"type": "object", "default": {},
                        "description": "keyword arguments of the architecture, e.g. widths, dropout"},
        },
    }  # fmt: skip
    if model_default is not None:
        model = {**model, "default": model_default}
    properties = {
        "model": model,
        "init": INIT_SCHEMA,
        "optimizer": OPTIMIZER_SCHEMA,
        "schedule": SCHEDULE_SCHEMA,
        "training": {"type": "object", "additionalProperties": False, "default": {},
                     "properties": {**TRAINING_PROPERTIES, **training}},
        "evaluation": {
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {
                "every": {"type": "integer", "minimum": 0, "default": 500,
                          "description": "evaluate on the tune split every N steps and at the end; 0: never (the "
                                         "final weights are exported)"},
                **evaluation,
                "select_by": {"enum": list(select_by), "default": select_by[0],
                              "description": "the tune metric that picks the exported model"},
            },
        },
        **(sections or {}),
    }  # fmt: skip
    for section, values in (defaults or {}).items():
        props = dict(properties[section]["properties"])
        for key, value in values.items():
            props[key] = {**props[key], "default": value}
        properties[section] = {**properties[section], "properties": props}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, "type": "object",
            "additionalProperties": False, "required": [] if model_default is not None else ["model"],
            "properties": properties}  # fmt: skip


def add_run_arguments(p, init: bool = True) -> None:
    """The command-line options every trainer shares: where the run and its model go, and what overrides its
    config (--steps, --seed, --init: see `override`)."""
    from deepflows.arguments import positive_int, seed

    p.add_argument("--out", required=True, help="model directory to write (model.json + weights.msgpack)")
    p.add_argument("--workdir", required=True, help="checkpoints, metrics and the exported model; a rerun resumes")
    p.add_argument("--steps", type=positive_int, help="training.steps")
    p.add_argument("--seed", type=seed, help="training.seed")
    if init:
        p.add_argument("--init", help="start from this model's weights (same architecture and options)")
    p.add_argument("--stop-at", type=positive_int, help="stop after this step (checkpointed; rerun without it to go on)")


def read_raw_config(path: str | Path) -> dict:
    """A training config file's mapping, before the command line's values join it and it is validated."""
    from deepflows.config import read_yaml

    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level")
    return raw


def load_config(config: str | Path | dict, schema: dict, source: str | None = None) -> dict:
    """A validated training config with defaults filled in; one line naming the key for anything wrong."""
    from deepflows.config import ConfigError, read_yaml, validate_config

    if isinstance(config, dict):
        raw, source = config, source or "config"
    else:
        if not Path(config).is_file():
            raise ConfigError(f"{config}: training config not found")
        raw, source = read_yaml(config), source or str(config)
    cfg = validate_config(raw, source, schema, combinations=False)
    if cfg.get("init", ...) is None:  # init: null is a random init, as without the key (run.json stays as it was)
        del cfg["init"]
    return cfg


def override(cfg: dict, *, steps: int | None = None, seed: int | None = None, init: str | None = None) -> dict:
    """The config with the command line's --steps, --seed and --init in place (each checked), and the
    warmup_cosine schedule's decay_steps recorded as the schedule really uses them."""
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
    if cfg["schedule"]["name"] == "warmup_cosine":
        cfg["schedule"]["decay_steps"] = cfg["schedule"]["decay_steps"] or cfg["training"]["steps"]
    return cfg


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


def _content(data):
    """Data records without their paths: a moved store or image is the same data."""
    if isinstance(data, dict):
        return {k: _content(v) for k, v in data.items() if k != "path"}
    if isinstance(data, list):
        return [_content(v) for v in data]
    return data


# ----------------------------------------------------------------------------- workdir


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


@contextlib.contextmanager
def _eval_mode(model):
    """The model in eval mode (no dropout, batch norm's running statistics) for the block, then training again."""
    model.eval()
    try:
        yield model
    finally:
        model.train()


# ----------------------------------------------------------------------------- jitted step


@functools.lru_cache(maxsize=8)
def _transform(settings: str, steps: int):
    """(schedule, optax transform) for a config, shared by runs with the same settings in one process:
    the transform is static in the jitted train step, so an equal object reuses its compilation."""
    from deepflows.nn.optim import make_optimizer, make_schedule

    settings = json.loads(settings)
    schedule = make_schedule(settings["schedule"], steps)
    return schedule, make_optimizer(settings["optimizer"], schedule)


@functools.lru_cache(maxsize=16)
def train_step(loss, rng, accumulate: int = 1):
    """The jitted step (model, optimizer, batch, constants, [seed, step]) -> (loss, aux) of a task's loss and
    random-stream policy, built once per process for each (the cache is what spares a recompilation)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    def accumulated(model, batch, constants):
        """Mean loss and gradient over `accumulate` equal microbatches, one after another (a scan: the memory of
        one); aux summed."""
        graphdef, state = nnx.split(model)
        parts = jax.tree.map(lambda a: a.reshape(accumulate, a.shape[0] // accumulate, *a.shape[1:]), batch)

        def one(carry, part):
            state, total, grads = carry
            micro = nnx.merge(graphdef, state)
            (value, aux), g = nnx.value_and_grad(loss, has_aux=True)(micro, part, constants)
            return (nnx.state(micro), total + value, jax.tree.map(jnp.add, grads, g)), aux

        zeros = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
        (state, total, grads), aux = jax.lax.scan(one, (state, jnp.zeros((), jnp.float32), zeros), parts)
        nnx.update(model, state)
        return (total / accumulate, jax.tree.map(lambda a: a.sum(0), aux)), jax.tree.map(lambda g: g / accumulate,
                                                                                          grads)  # fmt: skip

    @nnx.jit
    def step(model, optimizer, batch, constants, seed_step):
        rng(model, seed_step[0], seed_step[1], accumulate)
        if accumulate == 1:
            (value, aux), grads = nnx.value_and_grad(loss, has_aux=True)(model, batch, constants)
        else:
            (value, aux), grads = accumulated(model, batch, constants)
        optimizer.update(model, grads)
        return value, aux

    return step


def _check_batch_size(batch_size: int, accumulate: int) -> None:
    """Each microbatch (training.accumulate) must split evenly over the devices."""
    import jax

    devices = len(jax.devices())
    if batch_size % (accumulate * devices):
        parts = [f"training.accumulate {accumulate}"] * (accumulate > 1) + [f"the {devices} devices"] * (devices > 1)
        raise UserError(f"training.batch_size {batch_size}: must be a multiple of {' times '.join(parts)}")


def _spread(model, optimizer):
    """How batches reach the devices. One device: as they are. Several: model and optimizer state replicated
    on each, every batch split along its first axis (data parallelism; XLA's all-reduce sums the gradients)."""
    import jax
    from flax import nnx
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.devices()
    if len(devices) == 1:
        return jax.device_put
    mesh = Mesh(np.array(devices), ("data",))
    for node in (model, optimizer):
        nnx.update(node, jax.device_put(nnx.state(node), NamedSharding(mesh, PartitionSpec())))
    batches = NamedSharding(mesh, PartitionSpec("data"))
    return lambda batch: jax.device_put(batch, batches)


# ----------------------------------------------------------------------------- the loop


def fit(task, workdir, *, stop_at: int | None = None, command: str) -> dict:
    """Train (or resume) `task` in `workdir`; returns a summary. See the module docstring."""
    from deepflows.nn.checkpoints import Checkpoints
    from deepflows.nn.model_dir import write_json
    from deepflows.nn.warm_start import recorded_init, start_from

    for noisy in ("absl", "jax._src.xla_bridge"):  # Orbax's per-save lines; JAX looking for a TPU
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg = task.cfg
    if stop_at is not None and not 1 <= stop_at:
        raise UserError(f"--stop-at {stop_at}: must be at least 1")
    _check_batch_size(cfg["training"]["batch_size"], cfg["training"].get("accumulate", 1))
    # Built before the workdir is touched, so a wrong model option fails without leaving anything behind.
    model = task.build_model()
    # Fine-tuning: a fresh run starts from init.model's weights (checked, like the options, before the workdir is
    # touched); a resumed run restores its checkpoint and takes what it started from from run.json.
    started_from = None
    if "init" in cfg and not Checkpoints.exist(Path(workdir) / "checkpoints"):
        started_from = start_from(cfg["init"]["model"], model, task)

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with _workdir_lock(workdir):
        run_json = workdir / RUN_JSON
        loaded = started_from is not None
        if run_json.exists() and Checkpoints.exist(workdir / "checkpoints"):
            previous = json.loads(run_json.read_text())
            for key, value in task.data.items():
                if _content(previous.get(key)) != _content(value):
                    raise UserError(f"{workdir}: holds a run on other training data (its run.json's {key} differs); "
                                    "use another --workdir or remove this one")  # fmt: skip
            where = _first_difference(_strip(previous["config"]), _strip(cfg))
            if where:
                key = ".".join(map(str, where))
                hint = " (set schedule.decay_steps to change --steps on resume)" if key == "schedule.decay_steps" else ""
                raise UserError(f"{workdir}: holds a checkpointed run with a different config ({key}: "
                                f"{_get(previous['config'], where)!r} there, {_get(cfg, where)!r} here){hint}; "
                                "refusing to resume: use another --workdir or remove this one")  # fmt: skip
            if "init" in cfg:
                started_from = recorded_init(cfg, previous)
        record = {"config": cfg, **task.data, **({"init": started_from} if started_from else {})}
        write_json(run_json, {**record, "command": command})
        return _train(task, model, workdir, stop_at, command, started_from, loaded)


def _train(task, model, workdir: Path, stop_at, command, started_from=None, loaded=False) -> dict:
    import jax
    from flax import nnx
    from tqdm import tqdm

    from deepflows import __version__
    from deepflows.nn.checkpoints import Checkpoints
    from deepflows.nn.data import Prefetcher
    from deepflows.nn.metrics_log import MetricsLog, plot_metrics
    from deepflows.nn.model_dir import load_model, save_model

    cfg = task.cfg
    t, ev = cfg["training"], cfg["evaluation"]
    total, seed, batch_size, accumulate = t["steps"], t["seed"], t["batch_size"], t.get("accumulate", 1)
    for leftover in (*workdir.glob(".best.tmp-*"), *workdir.glob(".model.tmp-*"), *workdir.glob(".*.old-*")):
        shutil.rmtree(leftover, ignore_errors=True)  # from a killed run (the workdir is locked: none is live)
    schedule, tx = _transform(json.dumps({"schedule": cfg["schedule"], "optimizer": cfg["optimizer"]},
                                         sort_keys=True), total)  # fmt: skip
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    to_devices = _spread(model, optimizer)
    checkpoints = Checkpoints(workdir / "checkpoints", t["keep_checkpoints"])

    start, best, wall_before = 0, None, 0.0
    latest = checkpoints.latest()
    if latest is not None:
        if latest > total:
            raise UserError(f"{workdir}: its latest checkpoint is at step {latest}, beyond --steps {total}")
        meta = checkpoints.restore(latest, model, optimizer)
        start, best, wall_before = meta["step"], meta["best"], meta["wall_seconds"]
        log.info("resuming from %s at step %d (%d examples seen)", workdir / "checkpoints", start,
                 meta["data"]["examples_seen"])  # fmt: skip
    end = min(total, stop_at) if stop_at else total
    model.train()

    metrics = MetricsLog(workdir / METRICS, start)
    # The cached partial skips re-walking the model and optimizer graphs on every step.
    step_fn = nnx.cached_partial(train_step(task.loss, task.rng, accumulate), model, optimizer)
    constants = task.constants()
    best_dir = workdir / "best"
    base_meta = {
        "architecture": cfg["model"]["architecture"],
        "options": cfg["model"]["options"],
        "input_shape": task.shape,
        "channels": task.channels,
        **task.model_meta(),
        "training_config": cfg,
        "command": command,
        "deepflows_version": __version__,
        "jax_version": jax.__version__,
        "hardware": [f"{d.platform}:{d.device_kind}" for d in jax.devices()],
        **({"init": started_from} if started_from else {}),
    }  # fmt: skip
    log.info("%s on %s%s: %s, batch %d, steps %d..%d of %d", cfg["model"]["architecture"], base_meta["hardware"][0],
             f" x{len(base_meta['hardware'])}" if len(base_meta["hardware"]) > 1 else "", task.summary(),
             batch_size, start, end, total)  # fmt: skip
    evaluating = ev["every"] > 0

    def evaluate(target) -> dict:
        with _eval_mode(target):
            return task.evaluate(target)

    fresh = loaded and start == 0  # this process put init.model's weights into the model, and trains from step 0
    if started_from:
        log.info("fine-tuning: %s %s (weights sha256 %s)%s", "starting from" if fresh else "started from",
                 started_from["model"], started_from["sha256"],
                 "" if fresh else f"; resumed at step {start} from its own checkpoint")  # fmt: skip
    if fresh:  # the step-0 line: where the run started, and how the starting weights do on tune
        result = evaluate(model) if evaluating else {}
        metrics.write({"step": 0, "split": "init", **started_from, **result})
        if result:
            log.info("init model on tune: %s", task.describe(result))

    started, plotted = time.perf_counter(), -math.inf

    def checkpoint(step: int) -> None:
        meta = {"step": step, "seed": seed, "data": task.position(step), "rng": RNG_POLICIES[task.rng].format(seed=seed),
                "best": best, "wall_seconds": wall_before + time.perf_counter() - started}  # fmt: skip
        checkpoints.save(step, model, optimizer, meta)

    pending: list = []
    t_log, step_log = time.perf_counter(), start
    bar = tqdm(total=total, initial=start, unit="step", disable=None, dynamic_ncols=True, desc="train")
    # The background thread also copies each batch to the device, overlapping the transfer with the step.
    batches = Prefetcher((to_devices(b) for b in task.batches(start)), depth=t["prefetch"])
    stopped = None
    try:
        with _StopRequest() as stop:
            for step in range(start, end):
                pending.append(step_fn(next(batches), constants, np.array([seed, step], np.uint32)))
                done = step + 1
                bar.update(1)
                if done % t["log_every"] == 0 or done == end:
                    values = jax.device_get(pending)
                    now = time.perf_counter()
                    aux = {key: sum(np.asarray(v[1][key]).item() for v in values) for key in values[0][1]}
                    shown = task.train_metrics(aux, len(values) * batch_size)
                    record = {
                        "step": done, "split": "train",
                        "loss": float(np.mean([v[0] for v in values])),
                        **shown,
                        "lr": float(schedule(step)),
                        "steps_per_s": round((done - step_log) / (now - t_log), 3),
                        "examples_per_s": round((done - step_log) * batch_size / (now - t_log), 1),
                        **({"epoch": round(done * batch_size / task.examples, 3)} if task.examples else {}),
                    }  # fmt: skip
                    metrics.write(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", **{k: f"{v:.3f}" for k, v in shown.items()},
                                    lr=f"{record['lr']:.2e}")  # fmt: skip
                    if bar.disable:
                        log.info("step %d/%d loss %.4f%s lr %.3g, %.1f examples/s", done, total, record["loss"],
                                 "".join(f" {k} {v:.3f}" for k, v in shown.items()), record["lr"],
                                 record["examples_per_s"])  # fmt: skip
                    pending, t_log, step_log = [], now, done
                if evaluating and (done % ev["every"] == 0 or done == total):
                    result = evaluate(model)
                    improved = task.better(result, best)
                    if improved:
                        best = {**result, "step": done}
                        tmp = workdir / f".best.tmp-{os.getpid()}"
                        shutil.rmtree(tmp, ignore_errors=True)
                        save_model(tmp, model, {**base_meta, "steps": done, "tune_metrics": result})
                        _replace_dir(tmp, best_dir)
                    metrics.write({"step": done, "split": "tune", "best": improved, **result})
                    if time.perf_counter() - plotted > 60:  # a plot costs ~0.5 s; the last comes at the end
                        plot_metrics(workdir / METRICS, workdir / "metrics.png", **task.plotted)
                        plotted = time.perf_counter()
                    log.info("step %d tune: %s%s", done, task.describe(result), " (best so far)" if improved else "")
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
        plot_metrics(workdir / METRICS, workdir / "metrics.png", **task.plotted)
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
    if evaluating:
        if best is None or not (best_dir / "model.json").is_file():
            raise UserError(f"{workdir}: no best model to export (best/ is missing); remove the workdir and retrain")
        export, _ = load_model(best_dir)
        meta.update(best_step=best["step"], selected_by=f"tune {ev['select_by']}",
                    tune_metrics={k: v for k, v in best.items() if k != "step"}, **task.export_meta(export))  # fmt: skip
    else:
        export = model
        meta.update(best_step=total, selected_by="final step (no evaluation)", tune_metrics=None)
    if task.export_dtype is not None:
        weights = nnx.state(export, nnx.Param)
        nnx.update(export, jax.tree.map(lambda a: a.astype(task.export_dtype), weights))
    tmp = workdir / f".model.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    meta = save_model(tmp, export, meta)
    _replace_dir(tmp, workdir / "model")
    log.info("model (step %d of %d, %s) -> %s", meta["best_step"], total, meta["selected_by"], workdir / "model")
    return {"model": str(workdir / "model"), "steps": total, "best_step": meta["best_step"],
            "tune_metrics": meta["tune_metrics"], "wall_seconds": meta["wall_seconds"], "sha256": meta["sha256"],
            **({"init": started_from} if started_from else {})}
