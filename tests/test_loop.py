"""The shared training loop (deepflows.nn.loop) with a task of its own on arrays held in memory: resume equals
uninterrupted, gradient accumulation equals the whole batch, two devices train as one, and the config schemas."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flax")

from deepflows.errors import UserError  # noqa: E402
from deepflows.nn.data import ArrayStream  # noqa: E402
from deepflows.nn.task import Task  # noqa: E402

SHAPE = (12, 20, 7)
CONFIG = {
    "model": {"architecture": "small_cnn", "options": {"widths": [8, 16], "dropout": 0.1}},
    "schedule": {"name": "constant", "learning_rate": 0.01},
    "training": {"batch_size": 32, "steps": 24, "seed": 3, "checkpoint_every": 8, "log_every": 4},
    "evaluation": {"every": 8},
}  # fmt: skip


def toy_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images whose channel 4 is ~40 + 80 * label, the rest noise (as tests/test_train.py's store); labels; and a
    sample noise of 0 (the pileup loss's third array)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=n, p=[0.6, 0.3, 0.1]).astype(np.int32)
    images = rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8)
    images[..., 4] = np.clip(rng.normal(40 + 80 * labels[:, None, None], 20, (n, *SHAPE[:2])), 0, 255)
    return images, labels, np.zeros(n, np.float32)


class ArrayTask(Task):
    """small_cnn on images in memory with the pileup loss: the smallest task (README, "Adding a training task")."""

    def __init__(self, cfg: dict, train=None, tune=None):
        from deepflows.nn.train import pileup_loss

        train, self.tune = train or toy_arrays(256, 0), tune or toy_arrays(64, 1)
        self.cfg, self.loss, self.shape, self.channels = cfg, pileup_loss, list(SHAPE), [f"c{i}" for i in range(7)]
        self.data = {"arrays": {"sha256": hashlib.sha256(train[0].tobytes() + train[1].tobytes()).hexdigest()}}
        self.examples = len(train[1])
        self.stream = ArrayStream(train, cfg["training"]["batch_size"], cfg["training"]["seed"])

    def constants(self):
        return np.ones(3, np.float32), np.float32(0.0)

    def batches(self, step: int):
        return self.stream.batches(step)

    def train_metrics(self, aux: dict, examples: int) -> dict:
        return {"accuracy": aux["correct"] / examples}

    def evaluate(self, model) -> dict:
        from deepflows.nn.calibration import mean_nll

        logits = np.asarray(model(self.tune[0]), np.float64)
        return {"loss": mean_nll(logits, self.tune[1]), "accuracy": float(np.mean(logits.argmax(1) == self.tune[1]))}


def toy_config(**training) -> dict:
    from deepflows.nn.loop import config_schema, load_config, override

    cfg = json.loads(json.dumps(CONFIG))
    cfg["training"].update(training)
    schema = config_schema("toy", ["small_cnn"], ("loss", "accuracy"), training={}, evaluation={})
    return override(load_config(cfg, schema))


def weights(model_dir: Path) -> dict:
    import jax
    from flax import serialization

    blob = serialization.msgpack_restore((model_dir / "weights.msgpack").read_bytes())
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(blob)}


def test_array_stream_is_a_function_of_seed_and_step():
    arrays = (np.arange(50), np.arange(50) * 10)
    stream = ArrayStream(arrays, batch_size=8, seed=4)
    it = stream.batches(0)
    batches = [next(it) for _ in range(20)]  # 160 examples: three epochs and a bit, batches straddling them
    resumed = stream.batches(7)
    assert all(all(np.array_equal(a, b) for a, b in zip(next(resumed), batches[k])) for k in range(7, 20))
    seen = np.concatenate([b[0] for b in batches])
    assert all(sorted(seen[e * 50 : (e + 1) * 50]) == list(range(50)) for e in range(3))  # each epoch once each
    assert all(np.array_equal(b[1], b[0] * 10) for b in batches)  # rows stay together
    assert not np.array_equal(seen[:50], seen[50:100])  # a new order every epoch
    with pytest.raises(UserError, match="same number"):
        ArrayStream((np.arange(3), np.arange(4)), 2, 0)


def test_a_task_of_arrays_trains_resumes_and_exports(tmp_path):
    from deepflows.nn.loop import fit
    from deepflows.nn.model_dir import load_model

    whole = fit(ArrayTask(toy_config()), tmp_path / "whole", command="test")
    assert fit(ArrayTask(toy_config()), tmp_path / "resumed", stop_at=13, command="test")["stopped_at"] == 13
    assert fit(ArrayTask(toy_config()), tmp_path / "resumed", command="test")["sha256"] == whole["sha256"]
    rows = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == [4, 8, 12, 16, 20, 24] and train[-1]["loss"] < train[0]["loss"]
    assert [r["epoch"] for r in train][:2] == [0.5, 1.0] and 0 <= train[-1]["accuracy"] <= 1
    model, meta = load_model(tmp_path / "whole" / "model")
    assert meta["input_shape"] == list(SHAPE) and meta["selected_by"] == "tune loss"
    assert meta["tune_metrics"]["loss"] == min(r["loss"] for r in rows if r["split"] == "tune")
    run = json.loads((tmp_path / "whole" / "run.json").read_text())
    assert run["arrays"] == ArrayTask(toy_config()).data["arrays"]
    # other data in the same workdir is refused, before anything is written
    other = ArrayTask(toy_config(), train=toy_arrays(256, 9))
    with pytest.raises(UserError, match="holds a run on other training data"):
        fit(other, tmp_path / "resumed", command="test")


def test_gradient_accumulation_equals_the_whole_batch(tmp_path):
    """Two or four microbatches of the batch, averaged: the weights of one update on the whole batch (up to the
    order of float sums; no dropout, SGD so that no update divides by a tiny second moment)."""
    from deepflows.nn.loop import fit

    def run(name, accumulate):
        cfg = toy_config(steps=6, accumulate=accumulate)
        cfg["model"]["options"]["dropout"] = 0.0
        cfg["optimizer"]["name"] = "sgd"
        return fit(ArrayTask(cfg), tmp_path / name, command="test")

    run("one", 1), run("two", 2), run("four", 4)
    one, two, four = (weights(tmp_path / name / "model") for name in ("one", "two", "four"))
    assert all(np.allclose(one[k], two[k], rtol=1e-4, atol=1e-6) and np.allclose(one[k], four[k], rtol=1e-4, atol=1e-6)
               for k in one)  # fmt: skip
    assert any(not np.array_equal(one[k], two[k]) for k in one)  # really another computation
    lines = [[json.loads(x) for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in ("one", "four")]
    assert [r["accuracy"] for r in lines[0] if r["split"] == "train"] == [r["accuracy"] for r in lines[1] if r["split"] == "train"]
    with pytest.raises(UserError, match="training.batch_size 32: must be a multiple of training.accumulate 3"):
        fit(ArrayTask(toy_config(accumulate=3)), tmp_path / "three", command="test")
    assert not (tmp_path / "three").exists()


TWO_DEVICES = """
import json, sys
sys.path.insert(0, {tests!r})
import jax
from test_loop import ArrayTask, toy_config
from deepflows.errors import UserError
from deepflows.nn.loop import fit
from deepflows.nn.model_dir import load_model

assert len(jax.devices()) == 2, jax.devices()
whole = fit(ArrayTask(toy_config()), {out!r} + "/whole", command="test")
fit(ArrayTask(toy_config()), {out!r} + "/resumed", stop_at=13, command="test")
resumed = fit(ArrayTask(toy_config()), {out!r} + "/resumed", command="test")
try:
    fit(ArrayTask(toy_config(batch_size=30, accumulate=4)), {out!r} + "/odd", command="test")
except UserError as err:
    odd = str(err)
print(json.dumps({{"whole": whole["sha256"], "resumed": resumed["sha256"], "loss": whole["tune_metrics"]["loss"],
                  "hardware": load_model({out!r} + "/whole/model")[1]["hardware"], "odd": odd}}))
"""


def test_two_devices_train_as_one(tmp_path):
    """With two devices (XLA's host platform split in two) every batch is split across them: the run ends as a
    one-device run does, up to the order of float sums, and resumes exactly."""
    from deepflows.nn.loop import fit

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    script = TWO_DEVICES.format(tests=str(Path(__file__).parent), out=str(tmp_path / "two"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads(done.stdout.strip().splitlines()[-1])
    assert two["whole"] == two["resumed"] and two["hardware"] == ["cpu:cpu", "cpu:cpu"]
    one = fit(ArrayTask(toy_config()), tmp_path / "one", command="test")
    assert two["loss"] == pytest.approx(one["tune_metrics"]["loss"], rel=1e-3)
    assert two["odd"] == "training.batch_size 30: must be a multiple of training.accumulate 4 times the 2 devices"
