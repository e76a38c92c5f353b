"""In Silico Labeling: the multi-scale model, isl-train on the shared loop, isl-predict tile by tile, and
transfer learning, on tiny synthetic wells (tests/isl_synthetic.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from isl_synthetic import synthetic_well, write_well_dir

from deepflows.cli import main

TINY = {"scales": [1, 2, 4], "widths": [8, 8, 8], "blocks": 1, "fuse": 16, "head": 8}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A 160 x 160 synthetic well, two small train shards and the tune shard."""
    from deepflows.imaging.isl.patches import extract_patches
    from deepflows.imaging.isl.well import find_well_files, ingest_well

    root = tmp_path_factory.mktemp("isl")
    stack, targets = synthetic_well((160, 160), planes=4, labels=("DAPI", "MAP2"))
    planes, found = find_well_files(write_well_dir(root / "pngs", stack, targets))
    well = ingest_well(planes, found, root / "well.ome.zarr", chunks=64)
    train = [extract_patches(well, "train", root / f"train-{i}.zarr", size=32, patches=24, shard=(i, 2), tune_band=32,
                             chunk=8) for i in range(2)]  # fmt: skip
    tune = extract_patches(well, "tune", root / "tune.zarr", size=32, tune_band=32)
    return {"root": root, "well": well, "train": [str(p) for p in train], "tune": str(tune)}


def write_config(path, architecture="isl_fovea", options=None, steps=30, **sections):
    import yaml

    cfg = {"model": {"architecture": architecture, "options": options if options is not None else TINY},
           "data": {"margin": 8},
           "training": {"steps": steps, "batch_size": 4, "log_every": 10, "checkpoint_every": 10},
           "evaluation": {"every": 10}, "schedule": {"learning_rate": 0.01, "warmup_steps": 5}, **sections}  # fmt: skip
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def train(shards, tmp_path, name, config, *extra):
    out = tmp_path / f"{name}-model"
    args = ["isl-train", "--config", config, "--patches", *shards["train"], "--tune", shards["tune"],
            "--workdir", str(tmp_path / name), "--out", str(out), *extra]  # fmt: skip
    assert main(args) == 0
    return out


def test_distribution_statistics_match_the_distribution():
    from deepflows.imaging.isl import BINS
    from deepflows.imaging.isl.predict import STATISTICS, distribution_statistics

    logits = np.random.default_rng(0).normal(size=(5, BINS)) * 3
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    stats = distribution_statistics(p, STATISTICS)
    centres = (np.arange(BINS) + 0.5) / BINS
    np.testing.assert_allclose(stats[:, 0], p @ centres, atol=1e-5)
    for column, q in ((1, 0.5), (2, 0.05), (3, 0.25), (4, 0.75), (5, 0.95)):
        # the quantile lies inside the bin where the cumulative distribution reaches q
        expected_bin = np.array([np.searchsorted(np.cumsum(row), q) for row in p])
        assert np.array_equal(np.minimum((stats[:, column] * BINS).astype(int), BINS - 1), expected_bin)
    flat = distribution_statistics(np.full((1, BINS), 1 / BINS), ("entropy", "median", "q05", "q95"))[0]
    np.testing.assert_allclose(flat, [np.log2(BINS), 0.5, 0.05, 0.95], atol=1e-5)


def test_fovea_shapes_and_frozen_trunk_passes_no_gradient():
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from deepflows.nn.models import build_model

    model = build_model("isl_fovea", {**TINY, "labels": 2}, 3, 0)
    x = jnp.ones((2, 32, 32, 3))
    assert model(x).shape == (2, 32, 32, 2, 256)
    assert model(x, crop=8).shape == (2, 16, 16, 2, 256)
    unet = build_model("isl_unet", {"widths": [8, 16], "labels": 2}, 3, 0)
    assert unet(x, crop=8).shape == (2, 16, 16, 2)
    frozen = build_model("isl_fovea", {**TINY, "labels": 1, "frozen": True}, 3, 0)
    grads = nnx.grad(lambda m: jnp.sum(m(x)))(frozen)
    norms = {".".join(map(str, path)): float(jnp.abs(g.get_value()).sum()) for path, g in nnx.to_flat_state(grads)}
    assert all(v == 0 for k, v in norms.items() if k.startswith(("towers", "fuse")))
    assert any(v > 0 for k, v in norms.items() if k.startswith(("head", "hidden")))
    assert jax.tree.leaves(grads)


def test_fovea_depth_can_differ_per_tower():
    from deepflows.errors import UserError
    from deepflows.nn.models import build_model

    model = build_model("isl_fovea", {**TINY, "blocks": [0, 1, 3]}, 3, 0)
    assert [len(t.blocks) for t in model.towers] == [0, 1, 3]
    assert model(np.ones((1, 16, 16, 3), np.float32)).shape == (1, 16, 16, 3, 256)
    with pytest.raises(UserError, match="one count per scale"):
        build_model("isl_fovea", {**TINY, "blocks": [1, 2]}, 3, 0)


def test_a_spatial_fusion_takes_its_reach_from_the_crop():
    """fuse_kernel 3: the two fusion layers reach 2 pixels; they read them from the cropped border where there
    is one, so the centre's outputs depend on the context and not on the crop's padding."""
    from deepflows.errors import UserError
    from deepflows.nn.models import build_model

    model = build_model("isl_fovea", {**TINY, "fuse_kernel": 3}, 3, 0)
    x = np.random.default_rng(0).random((1, 32, 32, 3), np.float32)
    whole = np.asarray(model(x))
    assert whole.shape == (1, 32, 32, 3, 256)
    np.testing.assert_allclose(np.asarray(model(x, crop=8)), whole[:, 8:24, 8:24], atol=1e-5)
    with pytest.raises(UserError, match="odd"):
        build_model("isl_fovea", {**TINY, "fuse_kernel": 2}, 3, 0)


@pytest.mark.parametrize("name,window", [("isl_fovea_cpu", 96), ("isl_fovea_cpu_continue", 96), ("isl_fovea_gpu", 144),
                                         ("isl_unet", 96), ("isl_transfer", 96)])  # fmt: skip
def test_shipped_isl_configs_validate_and_build(repo_root, name, window):
    from deepflows.imaging.isl.train import schema
    from deepflows.nn.loop import load_config
    from deepflows.nn.models import build_model

    cfg = load_config(repo_root / "config" / "model" / f"{name}.yaml", schema())
    seen = window - cfg["data"]["shift"]
    model = build_model(cfg["model"]["architecture"], cfg["model"]["options"], 13, 0)
    assert seen % model.multiple == 0 and seen > 2 * cfg["data"]["margin"]


def test_isl_train_exports_a_model_that_learns(shards, tmp_path):
    out = train(shards, tmp_path, "fovea", write_config(tmp_path / "c.yaml", steps=60))
    meta = json.loads((out / "model.json").read_text())
    assert meta["name"] == "in-silico-labeling" and meta["labels"] == ["DAPI", "MAP2"] and meta["margin"] == 8
    assert meta["options"]["labels"] == 2 and meta["input_shape"] == [24, 24, 4]  # 32-px windows, shifted by 8
    lines = [json.loads(line) for line in (tmp_path / "fovea" / "metrics.jsonl").read_text().splitlines()]
    tune = [r for r in lines if r["split"] == "tune"]
    assert tune[-1]["loss"] < tune[0]["loss"] < np.log(256)  # below the uniform distribution's loss, and falling
    assert (tmp_path / "fovea" / "metrics.png").is_file()


def test_every_position_of_a_coarse_cell_learns(shards, tmp_path):
    """The towers' learned up-scale has weights per position of its cells; the loss must reach every one (a first
    version scored every other pixel from the window's corner, and the odd positions never learned)."""
    import jax.numpy as jnp
    from flax import nnx

    from deepflows.imaging.isl.train import ISLTask, isl_config

    args = type("Args", (), {"config": write_config(tmp_path / "c.yaml"), "patches": shards["train"],
                             "tune": [shards["tune"]], "labels": None, "steps": None, "seed": None, "init": None})()  # fmt: skip
    task = ISLTask(isl_config(args))
    model = task.build_model()
    batch = next(task.batches(0))
    grads = nnx.grad(lambda m: task.loss(m, batch, ())[0])(model)
    for i, tower in enumerate(model.towers):
        if tower.up is None:
            continue
        s, width = tower.scale, tower.up.kernel.get_value().shape[0]
        g = jnp.abs(grads["towers"][i]["up"]["kernel"].get_value()).reshape(width, s, s, width).sum(axis=(0, 3))
        assert bool(jnp.all(g > 0)), f"tower {s}x: positions without gradient {g}"
    # windows are cropped by data.shift (8) at offsets drawn anew each step
    shapes = {x.shape[1:3] for _, (x, _) in zip(range(3), task.batches(0))}
    assert shapes == {(24, 24)} and task.shape == [24, 24, 4]


def test_isl_train_resumes_to_the_same_weights(shards, tmp_path):
    config = write_config(tmp_path / "c.yaml", steps=20)
    whole = train(shards, tmp_path, "whole", config)
    assert main(["isl-train", "--config", config, "--patches", *shards["train"], "--tune", shards["tune"],
                 "--workdir", str(tmp_path / "parts"), "--out", str(tmp_path / "parts-model"), "--stop-at", "10"]) == 0
    parts = train(shards, tmp_path, "parts", config)
    assert (whole / "weights.msgpack").read_bytes() == (parts / "weights.msgpack").read_bytes()


@pytest.mark.parametrize("fuse_kernel", [1, 3])
def test_isl_predict_whole_well_is_the_same_at_any_tile_size(shards, tmp_path, fuse_kernel):
    from deepflows.imaging.io import open_ome_zarr

    options = {**TINY, "fuse_kernel": fuse_kernel}
    model = train(shards, tmp_path, "fovea", write_config(tmp_path / "c.yaml", options=options, steps=10))
    results = {}
    for tile in (48, 64):
        out = tmp_path / f"pred-{tile}.ome.zarr"
        assert main(["isl-predict", "--stack", str(shards["well"]), "--model", str(model), "--out", str(out),
                     "--tile", str(tile), "--context", "16", "--threads", "2"]) == 0  # fmt: skip
        levels, axes, entry = open_ome_zarr(out)
        results[tile] = np.asarray(levels[0])
    assert axes == "cyx" and results[48].shape == (14, 160, 160)
    # tiles join without seams: the prediction does not depend on where the tiles' edges fall
    np.testing.assert_allclose(results[48], results[64], atol=1e-4)
    mean, q05, q25, median, q75, q95 = (results[48][i] for i in (0, 2, 3, 1, 4, 5))
    assert np.all(q05 <= q25 + 1e-6) and np.all(q25 <= median + 1e-6) and np.all(median <= q75 + 1e-6)
    assert np.all(q75 <= q95 + 1e-6) and np.all((mean >= 0) & (mean <= 1))


@pytest.mark.parametrize("architecture", ["isl_fovea", "isl_unet"])
def test_test_time_augmentation_averages_the_eight_views(shards, tmp_path, architecture):
    from deepflows.imaging.isl.patches import dihedral, undo_dihedral
    from deepflows.imaging.isl.predict import Predictor
    from deepflows.nn.model_dir import load_model

    options = None if architecture == "isl_fovea" else {"widths": [4, 8]}
    model, meta = load_model(train(shards, tmp_path, architecture, write_config(tmp_path / "c.yaml", architecture,
                                                                                options, steps=10)))  # fmt: skip
    stats = ("mean", "median")
    plain, tta = (Predictor(model, meta, stats, tile=32, context=16, tta=t) for t in (False, True))
    block = np.random.default_rng(0).random((64, 64, meta["input_shape"][-1])).astype(np.float32)
    views = np.stack([undo_dihedral(plain(dihedral(block, k)), k) for k in range(8)])  # [8, 32, 32, channels]
    got = tta(block)
    means = [i for i, (_, s) in enumerate(plain.channels()) if s == "mean"]
    assert got.shape == views.shape[1:] and len(means) == 2
    # the views' distributions are averaged, so the mean of the mixture is the mean of the views' means
    np.testing.assert_allclose(got[..., means], views.mean(axis=0)[..., means], atol=1e-5)
    assert np.abs(views[1:] - views[:1]).max() > 1e-3  # the views differ: the average is not one view's
    if architecture == "isl_fovea":  # a mixture's median lies between its components' medians
        medians = [i for i, (_, s) in enumerate(plain.channels()) if s == "median"]
        lo, hi = views[..., medians].min(axis=0), views[..., medians].max(axis=0)
        assert np.all(got[..., medians] >= lo - 2 / 256) and np.all(got[..., medians] <= hi + 2 / 256)


def test_isl_predict_writes_only_what_is_asked_and_reads_a_tiff(shards, tmp_path):
    import tifffile

    from deepflows.imaging.io import open_ome_zarr
    from deepflows.imaging.isl.well import open_well

    model = train(shards, tmp_path, "fovea", write_config(tmp_path / "c.yaml", steps=10))
    tiff = tmp_path / "stack.tif"
    tifffile.imwrite(tiff, np.asarray(open_well(shards["well"]).stack), metadata={"axes": "ZYX"})
    out = tmp_path / "pred.ome.zarr"
    assert main(["isl-predict", "--stack", str(tiff), "--model", str(model), "--out", str(out),
                 "--statistics", "median,q95", "--tile", "64", "--tta"]) == 0  # fmt: skip
    levels, _, _ = open_ome_zarr(out)
    assert levels[0].shape == (4, 160, 160)
    assert zarr.open_group(str(out)).attrs["deepflows"]["isl_model"]["tta"] is True


def test_unet_baseline_trains_with_l2(shards, tmp_path):
    out = train(shards, tmp_path, "unet", write_config(tmp_path / "c.yaml", "isl_unet", {"widths": [8, 16]}, steps=20))
    pred = tmp_path / "unet.ome.zarr"
    assert main(["isl-predict", "--stack", str(shards["well"]), "--model", str(out), "--out", str(pred)]) == 0
    from deepflows.imaging.io import open_ome_zarr

    levels, _, entry = open_ome_zarr(pred)
    assert levels[0].shape == (2, 160, 160)


def test_transfer_learns_a_new_label_on_a_frozen_trunk(shards, tmp_path):
    from flax import nnx

    from deepflows.nn.model_dir import load_model

    base = train(shards, tmp_path, "base", write_config(tmp_path / "b.yaml", steps=20), "--labels", "DAPI")
    config = write_config(tmp_path / "t.yaml", options={**TINY, "frozen": True}, steps=20,
                          transfer={"model": str(base)}, optimizer={"weight_decay": 0.0})  # fmt: skip
    new = train(shards, tmp_path, "transfer", config, "--labels", "MAP2")
    (b, _), (n, meta) = load_model(base), load_model(new)
    assert meta["labels"] == ["MAP2"] and meta["transfer"]["model"] == str(base)
    towers = [(p, v.get_value()) for p, v in nnx.to_flat_state(nnx.state(b, nnx.Param)) if p[0] in ("towers", "fuse1")]
    theirs = dict(nnx.to_flat_state(nnx.state(n, nnx.Param)))
    assert towers and all(np.array_equal(v, theirs[p].get_value()) for p, v in towers)
    assert not np.array_equal(nnx.state(b, nnx.Param)["hidden"]["kernel"].get_value(),
                              nnx.state(n, nnx.Param)["hidden"]["kernel"].get_value())  # fmt: skip


@pytest.mark.parametrize("problem", ["not-isl-model", "planes", "statistics"])
def test_isl_predict_refuses_bad_input_with_one_line(shards, tmp_path, capsys, problem):
    import tifffile

    model = train(shards, tmp_path, "fovea", write_config(tmp_path / "c.yaml", steps=10))
    stack = str(shards["well"])
    extra = []
    if problem == "not-isl-model":
        meta = json.loads((model / "model.json").read_text())
        (model / "model.json").write_text(json.dumps({**meta, "name": "focus-quality"}))
    elif problem == "planes":
        stack = str(tmp_path / "two.tif")
        tifffile.imwrite(stack, np.zeros((2, 64, 64), np.uint16), metadata={"axes": "ZYX"})
    else:
        extra = ["--statistics", "mode"]
    out = tmp_path / "pred.ome.zarr"
    assert main(["isl-predict", "--stack", stack, "--model", str(model), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("deepflows isl-predict: error:") and ("planes" in err or "name" in err or "mode" in err)
    assert not out.exists() and not list(tmp_path.glob("pred.ome.zarr*"))


@pytest.mark.realdata
def test_shipped_model_on_the_real_wells_held_out_quadrant(shared_data, repo_root, tmp_path):
    """The shipped isl-neurons predicts the real well; on the test quadrant it keeps what its card reports
    (DAPI 0.760, MAP2 0.857, NFH 0.589) within a margin for other CPUs' arithmetic."""
    from deepflows.imaging.isl.well import find_well_files, ingest_well

    planes, targets = find_well_files(shared_data / "imaging" / "in_silico_labeling" / "condition_blue_sample")
    well = ingest_well(planes, targets, tmp_path / "well.ome.zarr")
    pred = tmp_path / "pred.ome.zarr"
    assert main(["isl-predict", "--stack", str(well), "--model", str(repo_root / "resources/models/isl-neurons"),
                 "--out", str(pred), "--statistics", "mean,q05,q95"]) == 0  # fmt: skip
    assert main(["isl-evaluate", "--well", str(well), "--predictions", str(pred), "--out", str(tmp_path / "ev")]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())["labels"]
    for label, reported in (("DAPI", 0.760), ("MAP2", 0.857), ("NFH", 0.589)):
        assert summary[label]["ours"]["r"] == pytest.approx(reported, abs=0.01)
        assert summary[label]["ours"]["coverage_q05_q95"] > 0.8
