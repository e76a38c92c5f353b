"""`deepflows train`: a toy store that a tiny model separates; resume equals uninterrupted; export; bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from deepflows.cli import STAGES, main
from deepflows.errors import UserError
from deepflows.store.examples import ShardWriter
from deepflows.store.shuffle import shuffle_examples

pytest.importorskip("flax")

SHAPE = (12, 20, 7)  # the models are shape-agnostic; small images keep the test fast
CHANNELS = ["read_base", "base_quality", "mapping_quality", "strand", "read_supports_variant",
            "base_differs_from_ref", "insert_size"]  # fmt: skip
N = 600
STEPS = 60
CONFIG = {
    "model": {"architecture": "small_cnn", "options": {"widths": [8, 16], "dropout": 0.1}},
    "optimizer": {"name": "adamw", "weight_decay": 0.0001},
    "schedule": {"name": "warmup_cosine", "learning_rate": 0.01, "warmup_steps": 5},
    "training": {"batch_size": 32, "steps": STEPS, "seed": 3, "checkpoint_every": 10, "log_every": 10,
                 "shuffle_buffer": 48},
    "evaluation": {"every": 20},
}  # fmt: skip


def toy_shard(shard: Path, n: int = N, **attrs) -> Path:
    """Labels 0/1/2 at 60/30/10 %; the 'read_supports_variant' channel is ~40 + 80 * label (the rest noise).
    Examples on c1 starting every 10 bp; `attrs` added to the shard's."""
    rng = np.random.default_rng(0)
    attrs = {"sample": "toy", "channels": CHANNELS, "shape": list(SHAPE), "shard_index": 0, "shard_count": 1,
             "regions": [f"c1:1-{10 * n}"], "sources": {"reads": {"path": "toy.bam", "size": 1, "sha256": "toy"}},
             **attrs}  # fmt: skip
    with ShardWriter(shard, SHAPE, attrs, labelled=True, chunk_size=16) as writer:
        for i in range(n):
            label = int(rng.choice(3, p=[0.6, 0.3, 0.1]))
            image = rng.integers(0, 256, SHAPE, dtype=np.uint8)
            image[..., 4] = np.clip(rng.normal(40 + 80 * label, 20, SHAPE[:2]), 0, 255).astype(np.uint8)
            writer.add(image, label=label, contig="c1", start=10 * i, end=10 * i + 1, ref="A", alts="G",
                       alt_indices="0", depth=30, allele_depth="15,15")  # fmt: skip
        writer.commit({"stats": {}})
    return shard


def make_store(root: Path, n: int = N) -> Path:
    """One toy shard (toy_shard); the first fifth (c1:1-1200) is the tune split."""
    store = root / "toy.zarr"
    shuffle_examples([toy_shard(root / "toy.shard.zarr", n)], store, tune_regions=[f"c1:1-{2 * n}"], seed=1,
                     bucket_size=128, chunk_size=16)  # fmt: skip
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def reference(store, tmp_path_factory):
    """An uninterrupted run: (workdir, summary)."""
    from deepflows.nn.train import train

    workdir = tmp_path_factory.mktemp("reference") / "run"
    return workdir, train(store, CONFIG, workdir)


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def final_weights(workdir: Path) -> dict:
    """The model and optimizer state of the last checkpoint, as numpy arrays by path."""
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager((workdir / "checkpoints").resolve())
    state = manager.restore(manager.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    import jax

    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(state["state"])}


def test_registered():
    assert STAGES["train"][0] == "deepflows.nn.train"


def test_loss_decreases_and_model_exports(reference, store):
    from deepflows.nn.data import open_split
    from deepflows.nn.model_dir import load_model

    workdir, summary = reference
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    tune = [r for r in records if r["split"] == "tune"]
    assert [r["step"] for r in train] == list(range(10, STEPS + 1, 10))
    assert [r["step"] for r in tune] == [20, 40, 60]
    assert train[-1]["loss"] < 0.5 * train[0]["loss"] and train[-1]["accuracy"] > 0.9  # separable toy task
    assert tune[-1]["loss"] < tune[0]["loss"]
    assert set(tune[0]["recall"]) == {"hom_ref", "het", "hom_alt"} and tune[0]["examples"] == 120
    assert (workdir / "metrics.png").stat().st_size > 1000

    model, meta = load_model(workdir / "model")
    assert meta["architecture"] == "small_cnn" and meta["input_shape"] == list(SHAPE) and meta["channels"] == CHANNELS
    assert meta["steps"] == STEPS and meta["best_step"] == summary["best_step"] and meta["realign"] is False
    assert meta["training_data"]["sha256"] == hashlib.sha256((store / "zarr.json").read_bytes()).hexdigest()
    assert meta["tune_metrics"]["loss"] == min(r["loss"] for r in tune)
    assert meta["hardware"] and meta["wall_seconds"] > 0 and meta["command"]
    # The exported model predicts the tune split as well as the evaluation said.
    tune_split = open_split(store, "tune")
    images, labels = tune_split.inputs.compute(), tune_split.labels
    logits = np.asarray(model(images))
    assert logits.shape == (len(labels), 3)
    assert np.mean(logits.argmax(1) == labels) == pytest.approx(meta["tune_metrics"]["accuracy"])
    # Temperature scaling fitted on the same tune split: never a worse tune loss than the raw logits.
    calibration = meta["calibration"]
    assert calibration["fitted_on"] == "tune split" and calibration["examples"] == len(labels)
    assert calibration["tune_loss"] == pytest.approx(meta["tune_metrics"]["loss"], abs=1e-5)
    assert calibration["tune_loss_calibrated"] <= calibration["tune_loss"] and calibration["temperature"] > 0


def test_resume_equals_uninterrupted(reference, store, tmp_path):
    from deepflows.nn.train import train

    workdir = tmp_path / "run"
    first = train(store, CONFIG, workdir, stop_at=25)  # stops with a checkpoint at 25 (not a multiple of 10)
    assert first["stopped_at"] == 25 and not (workdir / "model").exists()
    train(store, CONFIG, workdir)
    ref = reference[0]
    assert sha(workdir / "model" / "weights.msgpack") == sha(ref / "model" / "weights.msgpack")
    a, b = final_weights(workdir), final_weights(ref)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)  # exact, optimizer state too
    # The metrics log has each step once, and the evaluations of the uninterrupted run.
    def tune(path):
        return [r for r in map(json.loads, path.read_text().splitlines()) if r["split"] == "tune"]

    assert tune(workdir / "metrics.jsonl") == tune(ref / "metrics.jsonl")
    steps = [r["step"] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())]
    assert steps == [10, 20, 20, 25, 30, 40, 40, 50, 60, 60]


def test_resume_after_kill(reference, store, tmp_path):
    """A training process killed (SIGKILL, no chance to clean up) after its first checkpoint resumes exactly."""
    workdir = tmp_path / "run"
    config = write_config(tmp_path / "cfg.yaml", CONFIG)
    command = [sys.executable, "-m", "deepflows.cli", "train", "--examples", str(store), "--config", str(config),
               "--workdir", str(workdir)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (workdir / "checkpoints" / "10").is_dir() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (workdir / "model").exists(), "the run finished before it could be killed"
    assert main(["train", "--examples", str(store), "--config", str(config), "--workdir", str(workdir)]) == 0
    assert sha(workdir / "model" / "weights.msgpack") == sha(reference[0] / "model" / "weights.msgpack")


def test_sigterm_checkpoints_then_resumes(reference, store, tmp_path):
    """SIGTERM (Slurm preemption) finishes the step, checkpoints there, and stops; a rerun resumes exactly."""
    from deepflows.nn.train import train

    workdir = tmp_path / "run"

    def preempt():
        while not (workdir / "checkpoints" / "10").is_dir():
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # a late signal must not end pytest
    try:
        threading.Thread(target=preempt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            train(store, CONFIG, workdir)
    finally:
        signal.signal(signal.SIGTERM, previous)
    saved = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert 10 <= saved < STEPS and not (workdir / "model").exists()
    train(store, CONFIG, workdir)
    assert sha(workdir / "model" / "weights.msgpack") == sha(reference[0] / "model" / "weights.msgpack")


def test_refuses_other_config_and_reruns_finished(reference, store, tmp_path):
    from deepflows.nn.train import train

    workdir = tmp_path / "run"
    shutil.copytree(reference[0], workdir)
    # A finished run is exported again, unchanged, without training.
    again = train(store, CONFIG, workdir)
    assert again["sha256"] == reference[1]["sha256"]
    other = json.loads(json.dumps(CONFIG))
    other["schedule"]["learning_rate"] = 0.02
    with pytest.raises(UserError, match=r"different config \(schedule.learning_rate: 0.01 there, 0.02 here\)"):
        train(store, other, workdir)
    with pytest.raises(UserError, match="set schedule.decay_steps"):
        train(store, CONFIG, workdir, steps=STEPS + 10)
    # keys that do not change the weights may change
    other = json.loads(json.dumps(CONFIG))
    other["training"]["log_every"] = 5
    train(store, other, workdir)


def test_batches_are_a_function_of_seed_and_step(store):
    from deepflows.nn.data import BatchStream, open_split

    split = open_split(store, "train")
    stream = BatchStream(split, batch_size=50, seed=7, window_chunks=2)
    it = stream.batches(0)
    batches = [next(it) for _ in range(25)]  # > 2 epochs of 480
    resumed = stream.batches(13)
    for k in range(13, 25):
        images, labels, noise = next(resumed)
        assert np.array_equal(images, batches[k][0]) and np.array_equal(labels, batches[k][1])
        assert np.array_equal(noise, batches[k][2], equal_nan=True)
    # each epoch holds every example once (shuffled sampling)
    first_epoch = np.concatenate([b[0] for b in batches])[: split.n]
    assert len({im.tobytes() for im in first_epoch}) == split.n
    balanced = BatchStream(split, batch_size=480, seed=7, window_chunks=2, sampling="balanced")
    labels = np.concatenate([next(balanced.batches(k))[1] for k in range(3)])
    assert np.all(np.abs(np.bincount(labels, minlength=3) / len(labels) - 1 / 3) < 0.06)


def test_class_weights():
    from deepflows.nn.train import class_weights, load_train_config

    counts = np.array([60, 30, 10])
    cfg = load_train_config(CONFIG)
    w = class_weights(cfg, counts)
    assert np.allclose(w, [100 / 180, 100 / 90, 100 / 30]) and np.isclose((w * counts).sum(), counts.sum())
    assert np.allclose(class_weights(cfg, np.array([50, 50, 0])), [1, 1, 0])
    cfg["training"]["class_weights"] = [1, 2, 3]
    assert np.allclose(class_weights(cfg, counts), [1, 2, 3])


def _message(capsys, argv) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]


def test_bad_inputs(store, tmp_path, capsys):
    good = write_config(tmp_path / "good.yaml", CONFIG)
    args = lambda s, c, w="w": ["train", "--examples", str(s), "--config", str(c), "--workdir", str(tmp_path / w)]

    assert "train: error:" in _message(capsys, args(tmp_path / "none.zarr", good))
    assert "training store not found" in _message(capsys, args(tmp_path / "none.zarr", good))
    assert "training config not found" in _message(capsys, args(store, tmp_path / "none.yaml"))

    def bad(change, expected):
        cfg = json.loads(json.dumps(CONFIG))
        change(cfg)
        message = _message(capsys, args(store, write_config(tmp_path / "bad.yaml", cfg)))
        assert expected in message, message

    bad(lambda c: c["training"].update(bach_size=3), "training.bach_size: unknown key")
    bad(lambda c: c["optimizer"].update(name="lion"), "optimizer.name: 'lion' is not one of")
    bad(lambda c: c["model"].update(architecture="resnet"), "model.architecture: 'resnet' is not one of")
    bad(lambda c: c["model"]["options"].update(depth=3), "model option 'depth' is not an option of small_cnn")
    bad(lambda c: c["training"].update(sampling="balanced"), "set training.class_weights: none")
    bad(lambda c: c["training"].update(batch_size=0), "training.batch_size: 0 is less than the minimum of 1")
    assert not (tmp_path / "w").exists()  # nothing is left behind by a refused config

    # a store whose label array or tune split was deleted (its manifest lists them), not a training store at all
    unlabelled = tmp_path / "unlabelled.zarr"
    shutil.copytree(store, unlabelled)
    shutil.rmtree(unlabelled / "train" / "label")
    assert "array train/label is missing" in _message(capsys, args(unlabelled, good))
    no_tune = tmp_path / "no_tune.zarr"
    shutil.copytree(store, no_tune)
    shutil.rmtree(no_tune / "tune")
    assert "group tune is missing" in _message(capsys, args(no_tune, good))
    assert "not a deepflows training store" in _message(capsys, args(store / "train", good))
    assert main(["train", "--examples", str(store), "--config", str(good), "--workdir", str(tmp_path / "w"),
                 "--steps", "0"]) == 2  # fmt: skip


# ----------------------------------------------------------------------------- init: fine-tuning from a model


INIT_STEPS = 20


def init_config(model_dir, **training) -> dict:
    """CONFIG started from `model_dir`, short; warmup over every step: the first update has learning rate 0."""
    cfg = json.loads(json.dumps(CONFIG))
    cfg["init"] = {"model": str(model_dir)}
    cfg["schedule"]["warmup_steps"] = INIT_STEPS
    cfg["training"].update(steps=INIT_STEPS, **training)
    cfg["evaluation"]["every"] = 10
    return cfg


def model_weights(model_dir: Path) -> dict:
    import jax
    from flax import serialization

    blob = serialization.msgpack_restore((model_dir / "weights.msgpack").read_bytes())
    leaves = jax.tree_util.tree_leaves_with_path(blob)
    return {jax.tree_util.keystr(k).replace("'", ""): np.asarray(v) for k, v in leaves}


def checkpoint_params(workdir: Path, step: int) -> dict:
    """The model part of checkpoint `step`, keyed like model_weights (list indices are text in a checkpoint)."""
    import jax
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager((workdir / "checkpoints").resolve())
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    leaves = jax.tree_util.tree_leaves_with_path(state["state"]["model"])
    return {jax.tree_util.keystr(k).replace("'", ""): np.asarray(v) for k, v in leaves}


def test_init_starts_from_the_model(reference, store, tmp_path):
    from deepflows.nn.train import train

    source = reference[0] / "model"
    source_meta = json.loads((source / "model.json").read_text())
    workdir = tmp_path / "run"
    stopped = train(store, init_config(source), workdir, stop_at=1)
    assert stopped["stopped_at"] == 1 and stopped["init"] == {"model": str(source), "sha256": source_meta["sha256"]}
    # After one update at learning rate 0 the parameters are still exactly the source model's.
    got, want = checkpoint_params(workdir, 1), model_weights(source)
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    # The step-0 line: where the run started, and the source model's tune metrics (as its own export measured).
    first = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0 and first["split"] == "init" and first["sha256"] == source_meta["sha256"]
    assert first["loss"] == pytest.approx(source_meta["tune_metrics"]["loss"], rel=1e-6)
    assert first["accuracy"] == source_meta["tune_metrics"]["accuracy"]
    assert json.loads((workdir / "run.json").read_text())["init"] == stopped["init"]

    # Resumed: its own checkpoint, not the init directory (gone now), and the exported model.json records init.
    moved = tmp_path / "moved"
    shutil.copytree(source, moved)
    config = init_config(moved)
    first = train(store, config, tmp_path / "a", stop_at=15)
    shutil.rmtree(moved)
    done = train(store, config, tmp_path / "a")
    assert first["init"] == done["init"] == {"model": str(moved), "sha256": source_meta["sha256"]}
    meta = json.loads((tmp_path / "a" / "model" / "model.json").read_text())
    assert meta["init"] == done["init"] and meta["training_config"]["init"] == {"model": str(moved)}
    assert json.loads((tmp_path / "a" / "best" / "model.json").read_text())["init"] == done["init"]
    # ... ending exactly as a run that was never interrupted (the step-0 line is not repeated)
    shutil.copytree(source, moved)
    uninterrupted = train(store, config, tmp_path / "b")
    assert sha(tmp_path / "a" / "model" / "weights.msgpack") == sha(tmp_path / "b" / "model" / "weights.msgpack")
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 10, 10, 15, 20, 20] and uninterrupted["sha256"] == done["sha256"]
    # A fine-tuned model differs from its source, and from a run from random weights.
    assert uninterrupted["sha256"] not in (source_meta["sha256"], reference[1]["sha256"])

    # The resume check includes init: another model, or none, is refused.
    with pytest.raises(UserError, match=r"different config \(init.model: '.*moved' there, '.*other' here\)"):
        train(store, init_config(tmp_path / "other"), tmp_path / "a")
    no_init = init_config(moved)
    del no_init["init"]
    with pytest.raises(UserError, match=r"different config \(init: \{'model': '.*moved'\} there, '\(absent\)' here\)"):
        train(store, no_init, tmp_path / "a")
    # init: null is a random init, exactly as without the key
    from deepflows.nn.train import load_train_config

    assert load_train_config({**CONFIG, "init": None}) == load_train_config(CONFIG)


def test_init_float16_weights_train_as_float32(reference, store, tmp_path):
    """A model exported as float16 (as the focus model is) loads into float32 parameters; --init on the CLI."""
    from flax import serialization

    import jax

    source = reference[0] / "model"
    half = tmp_path / "half"
    shutil.copytree(source, half)
    weights = serialization.msgpack_restore((source / "weights.msgpack").read_bytes())
    blob = serialization.msgpack_serialize(jax.tree.map(lambda a: np.asarray(a).astype(np.float16), weights))
    (half / "weights.msgpack").write_bytes(blob)
    meta = json.loads((half / "model.json").read_text())
    meta["sha256"] = hashlib.sha256(blob).hexdigest()
    (half / "model.json").write_text(json.dumps(meta))

    cfg = init_config(source)
    del cfg["init"]
    config = write_config(tmp_path / "cfg.yaml", cfg)
    workdir = tmp_path / "run"
    assert main(["train", "--examples", str(store), "--config", str(config), "--workdir", str(workdir),
                 "--init", str(half), "--stop-at", "1"]) == 0  # fmt: skip
    got, want = checkpoint_params(workdir, 1), model_weights(half)
    assert all(got[k].dtype == np.float32 and np.array_equal(got[k], want[k].astype(np.float32)) for k in want)
    run = json.loads((workdir / "run.json").read_text())
    assert run["config"]["init"] == {"model": str(half)} and run["init"]["sha256"] == meta["sha256"]


def test_init_refuses_what_does_not_fit(reference, store, tmp_path, capsys):
    source = reference[0] / "model"
    argv = lambda cfg, init: ["train", "--examples", str(store), "--config",
                              str(write_config(tmp_path / "c.yaml", cfg)), "--workdir", str(tmp_path / "w"),
                              "--init", str(init)]  # fmt: skip

    def refused(change, init, *expected):
        cfg = init_config(source)
        change(cfg)
        assert main(argv(cfg, init)) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(errors) == 1 and "init.model: " in errors[0], errors  # one line
        assert all(e in errors[0] for e in expected), errors[0]

    refused(lambda c: c["model"]["options"].update(widths=[4, 8]), source,
            "its options.widths [8, 16] differs from the config's model.options.widths [4, 8]")
    refused(lambda c: c["model"]["options"].update(dropout=0.3), source, "options.dropout 0.1", "dropout 0.3")
    refused(lambda c: c["model"].update(architecture="read_set", options={}), source,
            "its architecture 'small_cnn' differs from the config's model.architecture 'read_set'")
    swapped = tmp_path / "swapped"
    shutil.copytree(source, swapped)
    meta = json.loads((swapped / "model.json").read_text())
    meta["channels"] = [meta["channels"][1], meta["channels"][0], *meta["channels"][2:]]
    (swapped / "model.json").write_text(json.dumps(meta))
    refused(lambda c: None, swapped, "its channels ['base_quality', 'read_base'", "differ from the training store's "
            "['read_base', 'base_quality'")  # fmt: skip
    meta["channels"], meta["input_shape"] = CHANNELS, [12, 30, 7]
    (swapped / "model.json").write_text(json.dumps(meta))
    refused(lambda c: None, swapped, "its input_shape [12, 30, 7] differs from the training store's [12, 20, 7]")
    refused(lambda c: None, tmp_path, "not a model directory (no model.json)")
    refused(lambda c: None, tmp_path / "absent", "not a model directory (no such directory")
    assert not (tmp_path / "w").exists()  # refused before the workdir is touched

    # An option left out on one side and set to its default on the other is no difference.
    from deepflows.nn.data import open_split
    from deepflows.nn.train import _init_mismatch, load_train_config

    cfg = load_train_config(init_config(source))
    cfg["model"]["options"]["centre"] = 16  # small_cnn's default
    assert _init_mismatch(json.loads((source / "model.json").read_text()), cfg, open_split(store, "train")) is None


def test_training_configs_validate():
    """config/model/*.yaml are valid; read_set_finetune.yaml is read_set.yaml's model, started from v8."""
    from deepflows.nn.train import load_train_config

    root = Path(__file__).resolve().parents[1] / "config" / "model"
    # isl_*.yaml, text_*.yaml and segment_*.yaml are other tasks' (tests/test_isl_model.py, test_text_response.py,
    # test_segment_train.py validate them with their schemas)
    configs = {p.stem: load_train_config(p) for p in sorted(root.glob("*.yaml"))
               if not p.name.startswith(("isl_", "text_", "segment_"))}  # fmt: skip
    finetune, base = configs["read_set_finetune"], configs["read_set"]
    assert finetune["init"] == {"model": "resources/models/wgs-illumina-v8"} and "init" not in base
    assert finetune["model"] == base["model"] and finetune["optimizer"] == base["optimizer"]
    assert finetune["schedule"] == {**base["schedule"], "learning_rate": 0.0003, "warmup_steps": 100,
                                    "end_learning_rate": 0.00001}  # fmt: skip
    t = finetune["training"]
    assert (t["steps"], t["batch_size"], t["seed"]) == (3000, 64, 1)
    assert finetune["evaluation"]["every"] == 250 and finetune["evaluation"]["select_by"] == "loss"
