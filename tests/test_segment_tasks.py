"""The segmentation task stores (deepflows.imaging.segment.tasks): built from tiny synthetic stand-ins of the
shared data (an ISL well ingested from PNGs, BBBC006-named fields, DSB2018-named TIFFs, an H&E slide), read
back region by region and crop by crop; and, with the real shared data, each real task."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import tifffile
from isl_synthetic import synthetic_well, write_well_dir
from segment_synthetic import fake_shared_data, nuclei_image
from PIL import Image

from deepflows.errors import UserError
from deepflows.imaging.isl import TEST, TRAIN, TUNE, split_mask
from deepflows.imaging.isl.well import find_well_files, ingest_well
from deepflows.imaging.segment import tasks
from deepflows.imaging.segment.labels import he_regions, instances_to_semantic, nuclei_mask
from deepflows.imaging.segment.tasks import (
    DSB_MASK,
    HE_PARAMS,
    NUCLEI_PARAMS,
    build_he_regions,
    build_label_free_nuclei,
    build_task,
    he_split_map,
    open_task,
    random_crops,
    score_baseline,
    split_rectangles,
)


def test_split_rectangles_cut_the_isl_split_into_whole_rectangles():
    split = split_mask((8, 8), "bottom-right", tune_band=2)
    assert split_rectangles(split, TRAIN) == [(0, 0, 4, 8), (4, 0, 2, 4)]
    assert split_rectangles(split, TUNE) == [(6, 0, 2, 4)]
    assert split_rectangles(split, TEST) == [(4, 4, 4, 4)]
    he = he_split_map((16, 6), tune_rows=3)
    assert [split_rectangles(he, code) for code in (TRAIN, TUNE, TEST)] == [[(0, 0, 9, 6)], [(9, 0, 3, 6)],
                                                                            [(12, 0, 4, 6)]]  # fmt: skip
    with pytest.raises(UserError, match="no room"):
        he_split_map((16, 6), tune_rows=12)


@pytest.fixture
def well_dir(tmp_path):
    stack, _ = synthetic_well(shape=(64, 64), planes=3)
    return write_well_dir(tmp_path / "well", stack, {"DAPI": nuclei_image((64, 64), 8, seed=1)})


def test_label_free_nuclei_from_a_well_folder_and_a_well_store(well_dir, tmp_path):
    out = build_label_free_nuclei(well_dir, tmp_path / "lf.zarr", tune_band=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lf.zarr", "well"]  # the temporary well is gone
    task = open_task(out)
    assert task.name == "label_free_nuclei" and task.classes == ["background", "nucleus"]
    assert task.splits() == ["train", "tune", "test"] and task.splits("test") == ["test"]
    assert [r.image.shape for r in task.regions("train")] == [(32, 64, 3), (24, 32, 3)]
    (test,) = task.regions("test")
    assert test.origin == (32, 32) and test.image.dtype == np.float32
    images = np.concatenate([r.image[:].reshape(-1, 3) for s in task.splits() for r in task.regions(s)])
    assert images.min() >= 0 and images.max() <= 1 and images.max() > 0.9
    planes, targets = find_well_files(well_dir)
    semantic, instances = nuclei_mask(np.asarray(Image.open(targets["DAPI"])), **NUCLEI_PARAMS)
    np.testing.assert_array_equal(test.mask[:], semantic[32:, 32:])
    np.testing.assert_array_equal(test.instances[:], instances[32:, 32:])
    assert task.attrs["split"] == {"by": "space", "test_quadrant": "bottom-right", "tune_band": 8}
    assert task.attrs["recipe"]["params"] == NUCLEI_PARAMS
    assert {s["role"] for s in task.attrs["sources"]} == {"phase contrast", "DAPI"}
    assert all(len(s["sha256"]) == 64 for s in task.attrs["sources"])
    # the same task from a well store: the same pixels
    store = ingest_well(planes, targets, tmp_path / "well.ome.zarr")
    again = open_task(build_label_free_nuclei(store, tmp_path / "lf2.zarr", tune_band=8))
    np.testing.assert_array_equal(again.regions("test")[0].image[:], test.image[:])
    with pytest.raises(UserError, match="already exists"):
        build_label_free_nuclei(store, out)


def test_random_crops_lie_inside_one_train_region(well_dir, tmp_path):
    task = open_task(build_label_free_nuclei(well_dir, tmp_path / "lf.zarr", tune_band=8))
    images, masks = random_crops(task.regions("train"), 24, 20, np.random.default_rng(0))
    assert images.shape == (20, 24, 24, 3) and masks.shape == (20, 24, 24)
    regions = [(r.image[:], r.mask[:]) for r in task.regions("train")]
    for image, mask in zip(images, masks):  # each crop is a window of one train region
        assert any(np.array_equal(image, r[y : y + 24, x : x + 24]) and np.array_equal(mask, m[y : y + 24, x : x + 24])
                   for r, m in regions for y in range(m.shape[0] - 23) for x in range(m.shape[1] - 23))  # fmt: skip
    with pytest.raises(UserError, match="no 40x40 crop fits"):
        random_crops(task.regions("tune"), 40, 1, np.random.default_rng(0))
    scores = score_baseline(task, "test")
    assert 0 <= scores["miou"] <= 1 and scores["pixels"] == 32 * 32


def test_fluorescence_nuclei_split_by_field_with_dsb2018_human_labels(tmp_path):
    fake_shared_data(tmp_path / "data")
    task = open_task(build_task("fluorescence_nuclei", tmp_path / "data", tmp_path / "fl.zarr"))
    assert {s: len(task.regions(s)) for s in task.splits()} == {"train": 6, "tune": 1, "test": 2, "dsb2018": 1}
    assert [r.source for r in task.regions("test")] == ["a08", "a09"]
    assert task.splits("test") == ["test", "dsb2018"]
    (dsb,) = task.regions("dsb2018")
    human = tifffile.imread(tmp_path / "data" / DSB_MASK)
    np.testing.assert_array_equal(dsb.mask[:], instances_to_semantic(human))
    np.testing.assert_array_equal(dsb.instances[:], human)
    assert dsb.mask[10, 11] == 0 and dsb.mask[10, 8] == 1  # where nuclei 1 and 2 touch: background
    for region in task.regions("train"):
        assert region.image.shape == (48, 64, 1) and 0 < np.asarray(region.mask).mean() < 0.5
    assert task.attrs["split"]["fields"]["tune"] == ["a07"]
    assert len(task.attrs["sources"]) == 11
    # the label recipe is the baseline of derived labels: it scores (close to) 1 on them
    assert score_baseline(task, "test")["miou"] > 0.95


def test_he_regions_split_by_rows_with_an_extra_test_tile(tmp_path):
    slide = fake_shared_data(tmp_path / "data")
    task = open_task(build_he_regions(tmp_path / "data", tmp_path / "he.zarr", tune_rows=20))
    assert task.classes == ["background", "tissue", "haematoxylin-dense"]
    assert {s: [r.image.shape for r in task.regions(s)] for s in task.splits()} == {
        "train": [(70, 100, 3)], "tune": [(20, 100, 3)], "test": [(30, 100, 3)], "tcia": [(50, 70, 3)]}
    labels = np.concatenate([task.regions(s)[0].mask[:] for s in ("train", "tune", "test")])
    np.testing.assert_array_equal(labels, he_regions(slide, **HE_PARAMS))
    assert set(np.unique(labels)) <= {0, 1, 2} and (labels > 0).any() and (labels == 0).any()
    assert task.regions("test")[0].instances is None
    assert task.attrs["split"]["tune"] == "20 rows above test"


def test_build_task_and_the_command_line(well_dir, tmp_path):
    with pytest.raises(UserError, match="--task nuclei: expected one of label_free_nuclei"):
        build_task("nuclei", tmp_path, tmp_path / "x.zarr")
    with pytest.raises(UserError, match="shared data folder not found"):
        build_task("he_regions", tmp_path / "nowhere", tmp_path / "x.zarr")
    with pytest.raises(UserError, match="task source"):
        build_task("fluorescence_nuclei", tmp_path, tmp_path / "x.zarr")
    fake_shared_data(tmp_path / "data")
    parser = argparse.ArgumentParser()
    tasks.add_arguments(parser)
    args = parser.parse_args(["--task", "fluorescence_nuclei", "--data", str(tmp_path / "data"),
                              "--out", str(tmp_path / "fl.zarr")])  # fmt: skip
    tasks.run(args)
    assert open_task(tmp_path / "fl.zarr").name == "fluorescence_nuclei"
    with pytest.raises(UserError, match="not a segmentation task store"):
        open_task(ingest_well(*find_well_files(well_dir), tmp_path / "well.zarr"))


# ------------------------------------------------------------------------------------------------- real data
def split_fractions(task, split):
    """Pixel-weighted class fractions of a split."""
    counts = sum(np.bincount(np.asarray(r.mask).ravel(), minlength=len(task.classes)) for r in task.regions(split))
    return counts / counts.sum()


@pytest.mark.realdata
def test_real_label_free_nuclei(shared_data, tmp_path):
    task = open_task(build_task("label_free_nuclei", shared_data, tmp_path / "lf.zarr"))
    assert [r.image.shape for r in task.regions("test")] == [(512, 512, 13)]
    for split in ("train", "tune", "test"):
        assert 0.02 < split_fractions(task, split)[1] < 0.4
    assert score_baseline(task, "test")["miou"] < 0.7  # phase contrast alone: poor, the point of ISL


@pytest.mark.realdata
def test_real_fluorescence_nuclei(shared_data, tmp_path):
    task = open_task(build_task("fluorescence_nuclei", shared_data, tmp_path / "fl.zarr"))
    assert [r.image.shape for r in task.regions("train")] == [(520, 696, 1)] * 6
    for split in task.splits():
        assert 0.02 < split_fractions(task, split)[1] < 0.4
    assert task.regions("dsb2018")[0].instances[:].max() == 183  # human labels 1..183, 125 nuclei
    dsb = score_baseline(task, "dsb2018")
    assert dsb["miou"] > 0.75 and dsb["boundary_f1"] > 0.6  # the classical recipe against human truth


@pytest.mark.realdata
def test_real_he_regions(shared_data, tmp_path):
    task = open_task(build_task("he_regions", shared_data, tmp_path / "he.zarr"))
    assert [r.image.shape for r in task.regions("test")] == [(742, 2220, 3)]
    background, tissue, dense = split_fractions(task, "test")
    assert 0.2 < tissue + dense < 0.8 and dense > 0.02
    assert split_fractions(task, "tcia")[0] < 0.05  # the tile is all tissue: no glass
