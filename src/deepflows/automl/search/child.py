"""The child task of the optimizer search: a rule's reward is the validation accuracy of the small MNIST ConvNet
(deepflows.automl.tasks.mnist) trained with it for a few hundred steps, at the best learning rate of a short
grid (trained side by side). A degenerate rule (NaN, no progress) stops after the first evaluation interval.

`evaluate_rule` is what an evaluation job runs: a module-level function of plain data, so that a process pool or
a Dask worker on a Slurm node can run it; each worker compiles the child program once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from pathlib import Path

import numpy as np

def digit_child_properties(candidate: str, steps: int) -> dict:
    """The schema properties every child trained on the MNIST digits has (the optimizer search's, scoring a
    rule, and the architecture search's, scoring a cell)."""
    return {
        "data": {"type": "string", "default": "../shared/data/automl/mnist_5k.csv.gz",
                 "description": "MNIST digits, gzip CSV (784 pixels + label per row)"},
        "steps": {"type": "integer", "minimum": 1, "default": steps, "description": f"training steps per {candidate}"},
        "check_every": {"type": "integer", "minimum": 1, "default": 50,
                        "description": f"a {candidate} whose loss has not fallen after this many steps (or is not "
                                       "finite at a check) stops here: a divisor of steps"},
        "batch_size": {"type": "integer", "minimum": 1, "default": 32},
    }  # fmt: skip


CHILD_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "default": {},
    "properties": {
        **digit_child_properties("rule", 200),
        "width": {"type": "integer", "minimum": 1, "default": 4, "description": "channels of the first conv"},
        "learning_rates": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1,
                           "default": [0.001, 0.01, 0.1], "description": "the grid each rule is trained with"},
        "units": {"type": "integer", "minimum": 1, "maximum": 6, "default": 3,
                  "description": "units per rule (PowerSign needs 2, AddSign 3)"},
        "seed": {"type": "integer", "minimum": 0, "default": 0, "description": "the ConvNet's init and batches"},
    },
}  # fmt: skip


@functools.cache
def _file_sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fingerprint(child: dict) -> str:
    """What a cached reward depends on: the child settings, the data's bytes (not its path) and the grammar."""
    from deepflows.automl import grammar

    return settings_fingerprint(child, grammar=[grammar.OPERANDS, grammar.UNARY, grammar.BINARY])


def settings_fingerprint(child: dict, **space) -> str:
    """The child settings with the data's bytes in place of its path, and what defines the candidates (`space`)."""
    data = _file_sha256(str(Path(child["data"]).resolve())) if Path(child["data"]).is_file() else child["data"]
    key = {**{k: v for k, v in child.items() if k != "data"}, "data": data, **space}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def rule_tx(h):
    """make_tx for the trainer: the rule's tokens and decay horizon are shared, the learning rate per run."""
    from deepflows.automl.interpreter import rule_transform

    return rule_transform(h["tokens"], h["lr"], h["decay_steps"])


@functools.lru_cache(maxsize=4)
def _task(path: str, batch_size: int, width: int):
    from deepflows.automl.tasks.mnist import MnistTask

    return MnistTask(path, batch_size=batch_size, width=width)


def evaluate_rule(text: str, child: dict) -> dict:
    """Train the child with rule `text` at each learning rate of the grid; the reward is the best validation
    accuracy (0 when every rate failed)."""
    from deepflows.automl.grammar import parse
    from deepflows.automl.trainer import FAILURES, OK, train_many

    start = time.perf_counter()
    rule = parse(text, child["units"])
    lrs = np.asarray(child["learning_rates"], dtype=np.float32)
    runs = train_many(_task(child["data"], child["batch_size"], child["width"]), rule_tx, {"lr": lrs},
                      shared={"tokens": rule.array, "decay_steps": np.float32(child["steps"])},
                      seeds=np.full(len(lrs), child["seed"]), steps=child["steps"], eval_every=child["steps"],
                      check_every=child["check_every"], split="validation")  # fmt: skip
    final = runs.final
    ok = runs.status == OK
    best = int(np.nanargmax(np.where(ok, final, -np.inf))) if ok.any() else None
    return {
        "rule": text,
        "reward": round(float(final[best]), 4) if best is not None else 0.0,
        "status": "ok" if best is not None else FAILURES[int(runs.status.max())],
        "learning_rate": child["learning_rates"][best] if best is not None else None,
        "accuracies": [None if np.isnan(a) else round(float(a), 4) for a in final],
        "steps": int(runs.step[-1]),
        "seconds": round(time.perf_counter() - start, 3),
    }
