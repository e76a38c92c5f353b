"""Training a DeepLab model on a task store (deepflows.imaging.segment.train), and using it: `deepflows segment`
on images of several kinds (PNG masks, OME-Zarr probabilities, overlays), tiled prediction, and the AR
microscope's segmenter. Tiny stand-ins of the shared data; a few steps of a real MobileNetV2 backbone."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import yaml
from segment_synthetic import fake_shared_data

from deepflows.cli import main
from deepflows.errors import UserError
from deepflows.imaging.segment.tasks import BBBC006, DSB_IMAGE, build_task, open_task
from deepflows.imaging.segment.train import SegmentTask, augment, segment_config, zoomed_crop


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A v3+ model trained 4 steps on the fluorescence task of the stand-in data."""
    root = tmp_path_factory.mktemp("seg")
    fake_shared_data(root / "data")
    store = build_task("fluorescence_nuclei", root / "data", root / "fl.zarr")
    config = {"model": {"architecture": "deeplab", "options": {"head": "v3plus"}},
              "data": {"crop": 32, "tile": 32, "scales": [0.75, 1.25]},
              "training": {"batch_size": 2, "steps": 4, "log_every": 2, "checkpoint_every": 2},
              "evaluation": {"every": 2}, "schedule": {"learning_rate": 0.001, "warmup_steps": 1}}  # fmt: skip
    (root / "cfg.yaml").write_text(yaml.safe_dump(config))
    assert main(["segment-train", "--config", str(root / "cfg.yaml"), "--task", str(store), "--workdir",
                 str(root / "run"), "--out", str(root / "model")]) == 0  # fmt: skip
    return root


def test_training_exports_a_model_that_knows_its_task(trained):
    meta = json.loads((trained / "model" / "model.json").read_text())
    assert meta["name"] == "segmentation" and meta["classes"] == ["background", "nucleus"]
    assert meta["input_normalization"]["kind"] == "percentiles" and meta["input_shape"] == [32, 32, 1]
    assert meta["options"]["classes"] == 2 and meta["backbone"] == "imagenet"
    tune = [json.loads(line) for line in (trained / "run" / "metrics.jsonl").read_text().splitlines()]
    tune = [m for m in tune if m["split"] == "tune"]
    assert [m["step"] for m in tune] == [2, 4] and all(0 <= m["miou"] <= 1 for m in tune)
    assert (trained / "run" / "metrics.png").stat().st_size > 10_000


def test_segment_writes_masks_overlays_and_probabilities(trained, tmp_path):
    field = trained / "data" / BBBC006.format(field="a08")
    dsb = trained / "data" / DSB_IMAGE
    out = tmp_path / "png"
    assert main(["segment", "--images", str(field), str(dsb), "--model", str(trained / "model"), "--out", str(out),
                 "--tile", "32"]) == 0  # fmt: skip
    from PIL import Image

    mask = np.asarray(Image.open(out / "BBBC006_z_aligned__a08__s1__w1_10.mask.png"))
    assert mask.shape == (48, 64) and set(np.unique(mask)) <= {0, 1}
    overlay = np.asarray(Image.open(out / "dsb2018_nuclei_img2d.overlay.png"))
    assert overlay.shape == (40, 40, 3)
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["image"] for r in rows] == [str(field), str(dsb)] and "regions nucleus" in rows[0]
    zarr_out = tmp_path / "zarr"
    assert main(["segment", "--images", str(field), "--model", str(trained / "model"), "--out", str(zarr_out),
                 "--format", "ome-zarr", "--tile", "32"]) == 0  # fmt: skip
    from deepflows.imaging.io import open_ome_zarr

    levels, axes, _ = open_ome_zarr(zarr_out / "BBBC006_z_aligned__a08__s1__w1_10.ome.zarr")
    probs = np.asarray(levels[0])
    assert axes == "cyx" and probs.shape == (2, 48, 64)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-4)
    labels, _, _ = open_ome_zarr(zarr_out / "BBBC006_z_aligned__a08__s1__w1_10.ome.zarr" / "labels" / "classes")
    np.testing.assert_array_equal(np.asarray(labels[0]), probs.argmax(0))
    np.testing.assert_array_equal(np.asarray(labels[0]), mask)  # the same prediction in both formats


def test_segment_refuses_bad_input_with_one_line_and_no_outputs(trained, tmp_path, capsys):
    slide = trained / "data" / "imaging" / "histology" / "cmu_small_region.svs"  # RGB: 3 channels, not 1
    assert main(["segment", "--images", str(slide), "--model", str(trained / "model"), "--out",
                 str(tmp_path / "out")]) != 0  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("cmu_small_region.svs: 3 channels (planes); the model reads 1")
    assert not (tmp_path / "out").exists()
    from deepflows.imaging.segment.predict import load_segmenter

    with pytest.raises(UserError, match="reads 1 channels; frames are RGB"):
        load_segmenter(trained / "model")


def test_tiled_prediction_agrees_with_whole_image_prediction(trained):
    from deepflows.imaging.segment.predict import Segmenter
    from deepflows.nn.model_dir import load_model

    model, meta = load_model(trained / "model")
    image = np.asarray(open_task(trained / "fl.zarr").regions("test")[0].image)
    whole = Segmenter(model, meta["classes"], tile=None).probabilities(image)
    tiled = Segmenter(model, meta["classes"], tile=32, context=16).probabilities(image)
    assert tiled.shape == whole.shape == (48, 64, 2)
    assert np.mean(tiled.argmax(-1) == whole.argmax(-1)) > 0.9  # tiles see less context (image pooling per tile)


def test_augmentation_keeps_images_and_masks_aligned():
    rng = np.random.default_rng(0)
    masks = (rng.random((16, 8, 8)) > 0.5).astype(np.uint8)
    images = np.repeat(masks[..., None].astype(np.float32), 3, axis=-1) * 0.5 + 0.25
    out, out_masks = augment(images, masks, rng, jitter=0.0)
    assert not np.array_equal(out_masks, masks)  # turned and flipped
    np.testing.assert_array_equal(out[..., 0] > 0.5, out_masks == 1)  # but together
    jittered, _ = augment(images, masks, np.random.default_rng(1), jitter=0.3)
    assert 0 <= jittered.min() and jittered.max() <= 1 and not np.allclose(jittered, out)


def test_shipped_training_configs_validate(repo_root):
    from deepflows.imaging.segment.train import schema
    from deepflows.nn.loop import load_config

    paths = sorted((repo_root / "config" / "model").glob("segment_*.yaml"))
    configs = {p.stem: load_config(p, schema()) for p in paths}
    assert set(configs) == {"segment_he", "segment_label_free", "segment_v3plus"}
    assert configs["segment_he"]["data"]["scales"] == [0.25, 1.0] and configs["segment_he"]["backbone"] == "imagenet"
    assert all(c["model"]["options"]["head"] == "v3plus" for c in configs.values())


def test_zoomed_crops_and_config_checks(trained):
    from deepflows.imaging.segment.tasks import in_memory

    regions = in_memory(open_task(trained / "fl.zarr").regions("train"))
    image, mask = zoomed_crop(regions, 32, 0.8, np.random.default_rng(0))  # 40 px of a field -> 32
    assert image.shape == (32, 32, 1) and mask.shape == (32, 32) and mask.dtype == np.uint8
    args = argparse.Namespace(config=str(trained / "cfg.yaml"), task=str(trained / "fl.zarr"), head="v3",
                              steps=None, seed=None, init=None)  # fmt: skip
    cfg = segment_config(args)
    assert cfg["model"]["options"]["head"] == "v3" and cfg["backbone"] == "imagenet"
    cfg["data"]["class_weights"] = [1.0, 2.0, 3.0]
    with pytest.raises(UserError, match="3 weights for 2 classes"):
        SegmentTask(cfg)


def test_segment_eval_scores_models_and_the_baseline_on_every_test_split(trained, tmp_path):
    out = tmp_path / "eval"
    assert main(["segment-eval", "--task", str(trained / "fl.zarr"), "--models", f"v3plus={trained / 'model'}",
                 "--tile", "32", "--out", str(out)]) == 0  # fmt: skip
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [(r["split"], r["method"]) for r in rows] == [("test", "classical"), ("test", "v3plus"),
                                                         ("dsb2018", "classical"), ("dsb2018", "v3plus")]  # fmt: skip
    assert all(0 <= float(r["miou"]) <= 1 for r in rows)
    assert float(rows[0]["miou"]) > 0.95  # the label recipe scores ~1 on its own labels
    table = (out / "metrics.md").read_text()
    assert "**fluorescence_nuclei, dsb2018**" in table and "| v3plus |" in table
    assert (out / "panels-test.png").stat().st_size > 10_000 and (out / "panels-dsb2018.png").exists()
    with pytest.raises(UserError, match="not a segmentation model of task he_regions"):
        from deepflows.imaging.segment.evaluate import predictions
        from deepflows.imaging.segment.tasks import build_he_regions

        he = open_task(build_he_regions(trained / "data", tmp_path / "he.zarr", tune_rows=16))
        predictions(he, {"v3plus": trained / "model"}, 32)


def test_field_of_view_detection_reports_auc_per_split(trained, tmp_path):
    from deepflows.imaging.segment.fov import auc, fields

    assert auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0])) == 1.0
    assert auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5 and auc(np.ones(3), np.ones(3)) is None
    assert fields((10, 12), (4, 3), 4) == [(0, 0), (0, 4), (0, 8), (4, 0), (4, 4), (4, 8)]
    out = tmp_path / "fov"
    assert main(["segment-fov", "--task", str(trained / "fl.zarr"), "--model", str(trained / "model"), "--field",
                 "16x16", "--stride", "8", "--min-fraction", "0.1", "--out", str(out)]) == 0  # fmt: skip
    report = json.loads((out / "fov.json").read_text())
    assert set(report["splits"]) == {"train", "test", "dsb2018"} and report["target"] == "nucleus"
    for split in report["splits"].values():
        assert split["fields"] > 0 and 0 < split["positive_rate"] < 1
        assert all(split[k] is None or 0 <= split[k] <= 1 for k in ("auc_head", "auc_segmentation"))
    rows = list(csv.DictReader((out / "fields.csv").open()))
    assert len(rows) == sum(s["fields"] for s in report["splits"].values())
    assert (out / "roc.png").stat().st_size > 10_000


@pytest.mark.workflow
def test_dry_run_of_imaging_segment(tmp_path, repo_root):
    """`snakemake -n imaging_segment` over config/imaging-segment.yaml, pointed at stand-ins of the shared data:
    each task built once; the shipped models scored (no training); a head without a given model trained."""
    import os
    import subprocess
    import sys

    from isl_synthetic import synthetic_well, write_well_dir

    from deepflows.imaging.segment.tasks import WELL_DIR

    data = tmp_path / "data"
    fake_shared_data(data)
    write_well_dir(data / WELL_DIR, *synthetic_well((64, 64), planes=3, seed=0))
    override = tmp_path / "override.yaml"

    def dry_run(segment):
        override.write_text(yaml.safe_dump({"segment": {"data": str(data), **segment}}))
        env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}
        run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo_root / "Snakefile"), "--configfile",
                              str(repo_root / "config" / "imaging-segment.yaml"), str(override), "-n", "-p",
                              "imaging_segment"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        return run.stdout, {m[0]: int(m[1]) for m in (line.split() for line in run.stdout.splitlines())
                            if len(m) == 2 and m[1].isdigit()}  # fmt: skip

    out, counts = dry_run({"arm": {"slide": str(data / "imaging" / "histology" / "cmu_small_region.svs")}})
    assert {k: counts.get(k) for k in ("segment_data", "segment_train", "segment_eval", "segment_fov", "arm_record")} \
        == {"segment_data": 3, "segment_train": 4, "segment_eval": 3, "segment_fov": 1, "arm_record": 1}
    assert "--models v3plus=" in out and "resources/models/segment-label-free-nuclei-fcn" in out
    assert "--tolerance 8 --band 16" in out and "resources/models/segment-he-regions --duration 20" in out
    # the label-free ablations are shipped; the others are trained here
    assert "--head fcn" in out and "results/segment/fluorescence_nuclei/train/fcn/model" in out
    assert "label_free_nuclei/train" not in out
    out, counts = dry_run({"tasks": {"fluorescence_nuclei": {"heads": ["v3plus"]}, "he_regions": {"heads": ["v3plus"]}},
                           "arm": {"slide": None}})  # fmt: skip
    assert "segment_train" not in counts and "arm_record" not in counts
