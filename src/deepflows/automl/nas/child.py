"""The child task of the architecture search: a cell's reward is the accuracy of the CellNet
(deepflows.automl.nas.cellnet) built with it and trained from scratch, or from its parent's trained weights, for a
short budget on 3,500 of the MNIST digits' 4,000 train digits and scored on the other 500 (`fit` and `tune`
in deepflows.automl.tasks.mnist); `retrain` trains on all 4,000 and scores the 1,000 validation digits, which no
search ever scores, so that a search's winner is judged on digits it was not chosen on.

`evaluate_cell` is what an evaluation job runs: a module-level function of plain data, so that a process pool or
a Dask worker on a Slurm node can run it; each worker compiles the child program once, for every cell (the cell
is data to that program, not structure).
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import numpy as np

from deepflows.automl.search.child import digit_child_properties
from deepflows.errors import UserError

CELL_CHILD_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "default": {},
    "properties": {
        **digit_child_properties("cell", 400),
        "channels": {"type": "integer", "minimum": 1, "default": 8,
                     "description": "channels of the first stage (the second has 2x, the third 4x)"},
        "cells_per_stage": {"type": "integer", "minimum": 1, "default": 1, "description": "N: cells per stage"},
        "stem_stride": {"type": "integer", "enum": [1, 2], "default": 2,
                        "description": "2: the cells run at 14x14, 7x7, 4x4 (a quarter of the cost of 1, "
                                       "NAS-Bench-201's full resolution)"},
        "learning_rate": {"type": "number", "exclusiveMinimum": 0, "default": 0.01,
                          "description": "Adam's peak rate, decayed to 0 over the steps (cosine)"},
        "seed": {"type": "integer", "minimum": 0, "default": 0,
                 "description": "init and batches; evaluate_cell's seed is added to it"},
    },
}  # fmt: skip


def fingerprint(child: dict) -> str:
    """What a cached reward depends on: the child settings, the data's bytes (not its path) and the cell space."""
    from deepflows.automl.nas.cells import EDGES, OPS
    from deepflows.automl.search.child import settings_fingerprint

    return settings_fingerprint(child, cells=[OPS, EDGES], network="cellnet")


def cell_tx(h):
    """make_tx for the trainer: Adam at the run's peak rate h["lr"], cosine-decayed to 0 over h["steps"]."""
    import jax.numpy as jnp
    import optax

    return optax.adam(lambda count: h["lr"] * 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(count / h["steps"], 1.0))))


# (train split, evaluation split): a search trains children on 3,500 digits and rewards them on 500 others; the
# report retrains its winners on all 4,000 and scores them on the 1,000 validation digits no search ever scored
SEARCH_SPLITS = ("fit", "tune")
RETRAIN_SPLITS = ("train", "validation")


@functools.lru_cache(maxsize=4)
def _task(path: str, batch_size: int, channels: int, cells_per_stage: int, stem_stride: int, train_split: str):
    from deepflows.automl.nas.cellnet import CellTask

    return CellTask(path, batch_size=batch_size, channels=channels, cells_per_stage=cells_per_stage,
                    stem_stride=stem_stride, train_split=train_split)  # fmt: skip


def task_of(child: dict, train_split: str = SEARCH_SPLITS[0]):
    return _task(child["data"], child["batch_size"], child["channels"], child["cells_per_stage"],
                 child["stem_stride"], train_split)  # fmt: skip


@functools.lru_cache(maxsize=4)
def _abstract(task):
    """(params, rest) of the task's network as shapes: the template weights files are read into."""
    from flax import nnx

    _, params, rest = nnx.split(nnx.eval_shape(lambda: task.model(nnx.Rngs(0))), nnx.Param, ...)
    return params, rest


def _train(cell, child: dict, seeds, steps: int, init=None, splits=SEARCH_SPLITS):
    from deepflows.automl.nas.cells import pruned
    from deepflows.automl.trainer import train_many

    seeds = np.asarray(seeds) + child["seed"]
    # dead edges as `none`: the same function (their output never reaches the cell's), without their cost
    return train_many(task_of(child, splits[0]), cell_tx,
                      {"lr": np.full(len(seeds), child["learning_rate"], np.float32)},
                      shared={"cell": np.asarray(pruned(cell), np.int32), "steps": np.float32(steps)},
                      seeds=seeds, steps=steps, eval_every=steps, check_every=min(child["check_every"], steps),
                      split=splits[1], init=init)  # fmt: skip


def evaluate_cell(cell: list[int], child: dict, seed: int = 0, weights_in: str | None = None,
                  weights_out: str | None = None) -> dict:  # fmt: skip
    """Train the child with `cell` (from a fresh init, or from the weights file `weights_in`); the reward is the
    accuracy on the `tune` digits (0 when the run failed). weights_out: where to write the trained weights (unless they
    stopped being finite; "weights" in the result says whether it was written). seed: added to the settings' seed,
    so that a search can give every child its own init and batches."""
    from deepflows.automl.nas.cells import to_text
    from deepflows.automl.trainer import FAILURES, NOT_FINITE, OK

    start = time.perf_counter()
    init = load_weights(task_of(child), weights_in) if weights_in else None
    runs = _train(cell, child, [seed], child["steps"], init)
    status = int(runs.status[0])
    written = None
    if weights_out and status != NOT_FINITE:
        save_weights(weights_out, runs.state, 0)
        written = str(weights_out)
    return {
        "cell": to_text(cell),
        "reward": round(float(runs.final[0]), 4) if status == OK else 0.0,
        "status": FAILURES[status],
        "steps": int(runs.step[-1]),
        "params": live_params(cell, child),
        "weights": written,
        "seconds": round(time.perf_counter() - start, 3),
    }


def live_params(cell, child: dict) -> int:
    """Parameters the child network with `cell` uses (deepflows.automl.nas.cellnet.live_param_count)."""
    from deepflows.automl.nas.cellnet import live_param_count

    return live_param_count(_abstract(task_of(child))[0], cell)


def retrain(cell, child: dict, seeds, steps: int) -> list[float | None]:
    """Accuracy on the 1,000 validation digits of `cell` trained from scratch on the 4,000 train digits with
    each seed for `steps` steps (the seeds side by side in one program); None for a run that failed."""
    final = _train(cell, child, seeds, steps, splits=RETRAIN_SPLITS).final
    return [None if np.isnan(a) else round(float(a), 4) for a in final]


def save_weights(path: str | Path, state, run: int = 0) -> None:
    """Run `run`'s (params, rest) of a batched trainer state, as msgpack; atomic (temp name, then os.replace), so a
    reader never sees half a file."""
    import jax
    from flax import nnx, serialization

    params, rest = jax.tree.map(lambda x: np.asarray(x[run]), state)
    blob = serialization.msgpack_serialize({"params": nnx.to_pure_dict(params), "rest": nnx.to_pure_dict(rest)})
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_bytes(blob)
    os.replace(temp, path)


def load_weights(task, path: str | Path):
    """(params, rest) from a weights file, checked against the task's network; UserError (one line) otherwise."""
    import jax
    import jax.numpy as jnp
    from flax import nnx, serialization

    params, rest = jax.tree.map(lambda x: x, _abstract(task))
    try:
        pure = serialization.msgpack_restore(Path(path).read_bytes())
        for state, name in ((params, "params"), (rest, "rest")):
            nnx.replace_by_pure_dict(state, pure[name])
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise UserError(f"{path}: not a weights file of this child network: {error}") from None
    want = [x.shape for x in jax.tree.leaves(_abstract(task))]
    got = [np.shape(x) for x in jax.tree.leaves((params, rest))]
    if want != got:
        raise UserError(f"{path}: weights of another network (channels, cells per stage?)")
    return jax.tree.map(jnp.asarray, (params, rest))
