"""Focus quality: synthetic defocus, certainty and aggregation, the sharpness baseline, training, and the
shipped model (blank patches uncertain; real-data accuracy on fields it never saw)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("flax")

from deepflows.cli import main
from deepflows.imaging.defocus import LEVELS, RADIUS_PER_LEVEL, airy_psf, blur, poisson_noise
from deepflows.imaging.focus_data import DefocusSet, content_mask, synthetic_field
from deepflows.imaging.focus_eval import SharpnessBaseline, evaluate
from deepflows.imaging.focus_model import PATCH, Scorer, aggregate, certainty
from deepflows.imaging.focus_train import level_metrics

SHIPPED = "resources/models/focus-quality"


def test_airy_psf_shape():
    assert airy_psf(0).shape == (1, 1)
    psf = airy_psf(4.0)
    c = psf.shape[0] // 2
    assert psf.sum() == pytest.approx(1.0, abs=1e-5) and np.allclose(psf, psf.T) and np.allclose(psf, psf[::-1])
    assert psf[c, c] == psf.max()
    # The first dark ring lies at the radius: far dimmer there than half-way in, brighter again beyond it.
    assert psf[c, c + 4] < 0.02 * psf[c, c] and psf[c, c + 4] < psf[c, c + 2] and psf[c, c + 4] < psf[c, c + 5]
    assert airy_psf(RADIUS_PER_LEVEL * 10).shape[0] > airy_psf(RADIUS_PER_LEVEL).shape[0]


def test_defocus_keeps_flux_and_loses_detail():
    field = synthetic_field((200, 220), seed=1).astype(np.float32)
    stds = []
    for level in range(LEVELS):
        blurred = blur(field, level)
        assert blurred.shape == field.shape
        assert blurred.mean() == pytest.approx(field.mean(), rel=0.01)
        stds.append(blurred.std())
    assert np.all(np.diff(stds) < 0) and np.array_equal(blur(field, 0), field)
    noisy = poisson_noise(np.full((300, 300), 100.0, np.float32), np.random.default_rng(0), gain=1.0)
    assert noisy.mean() == pytest.approx(100, rel=0.01) and noisy.var() == pytest.approx(100, rel=0.05)
    assert poisson_noise(np.full((300, 300), 100.0), np.random.default_rng(0), gain=4.0).var() == pytest.approx(
        25, rel=0.05
    )


def test_certainty_and_aggregate():
    onehot, flat = np.eye(LEVELS)[3], np.full(LEVELS, 1 / LEVELS)
    assert certainty(onehot) == pytest.approx(1.0) and certainty(flat) == pytest.approx(0.0, abs=1e-6)
    rating = aggregate(np.stack([onehot, flat, flat]))
    assert rating["level"] == 3 and rating["certainty"] == pytest.approx(1.0)  # flat patches weigh nothing
    assert aggregate(np.stack([flat, flat])) is None  # nothing to rate: "no content"
    assert level_metrics(np.array([0, 1, 3]), np.array([0, 2, 2])) == pytest.approx(
        {"n": 3, "exact": 1 / 3, "within_one": 1.0, "spearman": 0.866}, abs=1e-3)  # fmt: skip


def test_training_patches_and_grid():
    fields = [synthetic_field((2 * PATCH + 8, 3 * PATCH + 40), seed=s).astype(np.float32) for s in (2, 3)]
    data = DefocusSet(fields, val_columns=PATCH + 10)
    x, y = data.sample(np.random.default_rng(0), 16)
    x2, y2 = data.sample(np.random.default_rng(0), 16)
    assert x.shape == (16, PATCH, PATCH) and np.array_equal(x, x2) and np.array_equal(y, y2)  # seeded
    gx, gy, gfield, gcontent = data.grid(seed=1, columns="val")
    assert gx.shape == (2 * 2 * LEVELS, PATCH, PATCH) and sorted(set(gy)) == list(range(LEVELS))
    assert set(gfield) == {0, 1} and gcontent.dtype == bool
    blank = np.full((PATCH, PATCH), 120.0, np.float32)
    assert not content_mask(np.block([[blank, blank], [blank, blank + 1000 * (np.arange(PATCH) % 2)]])).ravel()[0]


def test_sharpness_baseline_orders_levels():
    fields = [synthetic_field((4 * PATCH, 4 * PATCH), seed=s, density=1e-3).astype(np.float32) for s in (4, 5, 6)]
    train = DefocusSet(fields[:2]).grid(seed=0)
    test = DefocusSet(fields[2:]).grid(seed=1)
    baseline = SharpnessBaseline().fit(train[0][train[3]], train[1][train[3]])
    result = evaluate(baseline.probs(test[0]), *test[1:])
    assert result["patch"]["spearman"] > 0.8 and result["image"]["n"] == LEVELS
    assert len(result["per_level"]) == LEVELS


def test_focus_train_writes_a_loadable_model(tmp_path):
    from deepflows.nn.model_dir import load_model

    focus_fields(tmp_path)
    out = tmp_path / "model"
    assert main(["focus-train", "--images", str(tmp_path / "f*.png"), "--out", str(out), "--workdir", str(tmp_path / "w"),
                 "--steps", "2", "--batch-size", "4", "--eval-every", "1", "--val-columns", str(PATCH),
                "--model-options", '{"widths": [4, 8], "hidden": 16}']) == 0  # fmt: skip
    model, meta = load_model(out)
    assert meta["architecture"] == "focus_cnn" and meta["input_shape"] == [PATCH, PATCH, 1] and meta["steps"] == 2
    assert meta["options"] == {"widths": [4, 8], "hidden": 16} and model.dense.out_features == 16
    assert len(meta["training_data"]) == 2 and meta["best_step"] in (1, 2) and meta["selected_by"] == "tune loss"
    assert {p.name for p in out.iterdir()} == {"model.json", "weights.msgpack"}  # a copy of the workdir's export
    assert (out / "weights.msgpack").read_bytes() == (tmp_path / "w" / "model" / "weights.msgpack").read_bytes()
    assert model.dense.kernel.dtype == np.float16  # the exported weights are half precision
    rows = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    tune = [r for r in rows if r["split"] == "tune"]
    assert [r["step"] for r in tune] == [1, 2] and all(np.isfinite(r["loss"]) for r in tune)
    assert set(tune[0]) >= {"exact", "within_one", "spearman", "rps", "n", "best"}
    chosen = min(tune, key=lambda r: r["loss"])
    assert meta["tune_metrics"] == {k: v for k, v in chosen.items() if k not in ("step", "split", "best")}
    assert Scorer(model)(np.zeros((1, PATCH, PATCH), np.float32)).shape == (1, LEVELS)
    # Continuing from the float16 weights it wrote, with the other loss and selection options.
    again = tmp_path / "again"
    assert main(["focus-train", "--images", str(tmp_path / "f*.png"), "--out", str(again), "--workdir", str(tmp_path / "w2"),
                 "--steps", "2", "--batch-size", "4", "--eval-every", "1", "--val-columns", str(PATCH), "--init", str(out),
                 "--rps-weight", "5", "--select", "within_one", "--model-options", '{"widths": [4, 8], "hidden": 16}']) == 0  # fmt: skip
    _, meta = load_model(again)
    assert meta["init"] == {"model": str(out), "sha256": load_model(out)[1]["sha256"]}
    assert meta["training_config"]["evaluation"]["select_by"] == "within_one" and meta["selected_by"] == "tune within_one"
    assert meta["training_config"]["training"]["rps_weight"] == 5
    rows = [json.loads(line) for line in (tmp_path / "w2" / "metrics.jsonl").read_text().splitlines()]
    assert [r["split"] for r in rows] == ["init", "train", "tune", "train", "tune"]
    assert all(np.isfinite(r["loss"]) for r in rows) and rows[0]["sha256"] == meta["init"]["sha256"]


def focus_fields(tmp_path):
    from PIL import Image

    for s in (7, 8):
        Image.fromarray(synthetic_field((PATCH + 10, 2 * PATCH + 20), seed=s)).save(tmp_path / f"f{s}.png")


def focus_argv(tmp_path, out, workdir, steps=5, *extra) -> list[str]:
    return ["focus-train", "--images", str(tmp_path / "f*.png"), "--out", str(tmp_path / out), "--workdir",
            str(tmp_path / workdir), "--steps", str(steps), "--batch-size", "4", "--eval-every", "2", "--val-columns",
            str(PATCH), "--model-options", '{"widths": [4, 8], "hidden": 16, "dropout": 0.5}', *extra]  # fmt: skip


def tune_rows(workdir) -> list[dict]:
    rows = map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
    return [r for r in rows if r["split"] == "tune"]


def test_focus_train_resumes_to_the_same_weights(tmp_path):
    """Stopped at step 3 (between evaluations) and rerun, focus-train ends with the weights, the selected
    step and the metrics of an uninterrupted run; a workdir of another run's settings is refused."""
    focus_fields(tmp_path)
    assert main(focus_argv(tmp_path, "whole", "w1")) == 0
    assert main(focus_argv(tmp_path, "resumed", "w2", 5, "--stop-at", "3")) == 0
    assert not (tmp_path / "resumed").exists()  # nothing exported before the last step
    assert main(focus_argv(tmp_path, "resumed", "w2")) == 0
    whole, resumed = (tmp_path / name / "weights.msgpack" for name in ("whole", "resumed"))
    assert whole.read_bytes() == resumed.read_bytes()
    steps = [json.loads(line)["step"] for line in (tmp_path / "w2" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 2, 3, 4, 4, 5, 5]  # train lines every 2 steps and at the stop, tune lines every 2
    assert tune_rows(tmp_path / "w1") == tune_rows(tmp_path / "w2") and [r["step"] for r in tune_rows(tmp_path / "w1")] == [2, 4, 5]
    # the same workdir with another learning rate: one line, nothing written
    assert main(focus_argv(tmp_path, "other", "w2", 5, "--learning-rate", "1e-3")) == 2
    assert not (tmp_path / "other").exists()


def test_focus_train_resumes_after_kill(tmp_path):
    """A focus-train process killed (SIGKILL, no chance to clean up) after its first checkpoint resumes and ends
    with the weights, optimizer state and tune metrics of an uninterrupted run."""
    import signal
    import subprocess
    import sys
    import time

    from test_train import final_weights

    focus_fields(tmp_path)
    steps = 40
    assert main(focus_argv(tmp_path, "whole", "w1", steps)) == 0
    workdir = tmp_path / "w2"
    process = subprocess.Popen([sys.executable, "-m", "deepflows.cli", *focus_argv(tmp_path, "resumed", "w2", steps)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(12000):  # two minutes at most, for the first checkpoint (step 2 of 40)
            if (workdir / "checkpoints" / "2").is_dir() or process.poll() is not None:
                break
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (workdir / "model").exists(), "the run finished before it could be killed"
    assert main(focus_argv(tmp_path, "resumed", "w2", steps)) == 0
    assert (tmp_path / "whole" / "weights.msgpack").read_bytes() == (tmp_path / "resumed" / "weights.msgpack").read_bytes()
    a, b = final_weights(tmp_path / "w1"), final_weights(workdir)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert tune_rows(tmp_path / "w1") == tune_rows(workdir)


def test_focus_config(tmp_path, capsys):
    """focus-train's settings as a config (one schema, deepflows.imaging.focus_train.schema): the defaults are
    the shipped recipe's (the command line's defaults before the shared loop), --config YAML takes any of them,
    the options override it, and a wrong key is one line."""
    import argparse

    import yaml

    from deepflows.imaging.focus_train import add_arguments, focus_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = lambda *extra: parser.parse_args(["--out", "o", "--workdir", "w", *extra])  # noqa: E731
    cfg = focus_config(args("--images", "a.png"))
    assert cfg["model"] == {"architecture": "focus_cnn", "options": {"dropout": 0.5}}
    assert cfg["data"] == {"images": ["a.png"], "val_columns": 168} and cfg["evaluation"] == {"every": 50, "select_by": "loss"}
    t = cfg["training"]
    assert (t["steps"], t["batch_size"], t["seed"], t["rps_weight"], t["checkpoint_every"], t["log_every"]) == (600, 64, 0, 1.0, 50, 50)
    o, sc = cfg["optimizer"], cfg["schedule"]
    assert (o["name"], o["weight_decay"], o["b1"], o["b2"], o["eps"], o["clip_norm"]) == ("adamw", 1e-4, 0.9, 0.999, 1e-8, 1.0)
    assert (sc["name"], sc["learning_rate"], sc["warmup_steps"], sc["decay_steps"], sc["end_learning_rate"]) == (
        "warmup_cosine", 3e-4, 50, 600, 0.0)  # decay_steps: the run's steps
    config = tmp_path / "focus.yaml"
    config.write_text(yaml.safe_dump({"data": {"images": ["b.png"], "val_columns": 100}, "training": {"steps": 7},
                                      "evaluation": {"select_by": "within_one"}, "init": {"model": "m"}}))  # fmt: skip
    cfg = focus_config(args("--config", str(config), "--steps", "9", "--eval-every", "3"))
    assert cfg["data"] == {"images": ["b.png"], "val_columns": 100} and cfg["training"]["steps"] == 9
    assert cfg["evaluation"] == {"every": 3, "select_by": "within_one"} and cfg["training"]["checkpoint_every"] == 3
    assert cfg["init"] == {"model": "m"}
    config.write_text(yaml.safe_dump({"training": {"stepz": 7}}))
    assert main(["focus-train", "--images", "a.png", "--out", str(tmp_path / "o"), "--workdir", str(tmp_path / "w"),
                 "--config", str(config)]) == 2  # fmt: skip
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"{config}: training.stepz: unknown key (known keys here: accumulate, batch_size, checkpoint_every, "
        "keep_checkpoints, log_every, prefetch, rps_weight, seed, steps)")
    assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def shipped(repo_root):
    from deepflows.nn.model_dir import load_model

    model, meta = load_model(repo_root / SHIPPED)
    return Scorer(model), meta


def test_shipped_model_is_uncertain_on_blank_patches(shipped):
    """Background crops (flat, with camera-like noise at several brightnesses) get low certainty; the same
    crops with nuclei in them get high certainty."""
    scorer, _ = shipped
    rng = np.random.default_rng(0)
    blank = np.stack([poisson_noise(np.full((PATCH, PATCH), bg, np.float32), rng) for bg in (20, 120, 500, 3000)])
    nuclei = np.stack([synthetic_field((PATCH, PATCH), seed=s, density=2e-3) for s in range(4)]).astype(np.float32)
    assert certainty(scorer(blank)).max() < 0.3
    assert certainty(scorer(nuclei)).mean() > certainty(scorer(blank)).mean() + 0.2


@pytest.mark.realdata
def test_shipped_model_on_held_out_bbbc006_fields(shipped, shared_data):
    """Fields a07-a09 were never trained on: every level, rated as whole images and per patch, against the
    sharpness baseline fitted on the training fields a01-a06; and the real background patches of those
    fields are less certain than the patches with nuclei."""
    from deepflows.imaging.focus_data import load_field

    scorer, meta = shipped
    folder = shared_data / "imaging" / "focus_quality"
    test = sorted(folder.glob("BBBC006_z_aligned__a0[7-9]__s1__w1_10.png"))
    train = sorted(folder.glob("BBBC006_z_aligned__a0[1-6]__s1__w1_10.png"))
    assert len(test) == 3 and len(train) == 6
    assert not {p.name for p in test} & {d["path"].rsplit("/", 1)[-1] for d in meta["training_data"]}
    x, y, field, content = DefocusSet([load_field(p) for p in test]).grid(seed=11)
    probs = scorer(x)
    model = evaluate(probs, y, field, content)
    tx, ty, _, tcontent = DefocusSet([load_field(p) for p in train]).grid(seed=12)
    baseline = SharpnessBaseline().fit(tx[tcontent], ty[tcontent])
    classical = evaluate(baseline.probs(x), y, field, content, oracle_content=True)
    assert model["image"]["within_one"] >= 0.95 and model["image"]["spearman"] >= 0.95
    assert model["patch"]["within_one"] >= 0.9 and model["patch"]["spearman"] >= 0.95
    for scope in ("patch", "image"):
        assert model[scope]["exact"] > classical[scope]["exact"]
    cert = certainty(probs)
    assert cert[~content].mean() < cert[content].mean() - 0.2
