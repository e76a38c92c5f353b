"""In Silico Labeling data: the well store (isl-ingest, open_well, read_stack) and the sharded patches
(isl-patches, load_patches) on tiny synthetic wells; one real-data test ingests the real well."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from isl_synthetic import plane_name, synthetic_well, target_name, write_well_dir

from deepflows.cli import main
from deepflows.errors import UserError
from deepflows.imaging.isl import INPUT_CHANNEL, SPLITS, TRAIN, TUNE, normalization, normalize, split_mask
from deepflows.imaging.isl.patches import dihedral, inside_windows, load_patches, open_patches
from deepflows.imaging.isl.well import open_well, read_stack

REAL_WELL = Path("imaging") / "in_silico_labeling" / "condition_blue_sample"
SIZE, BAND = 16, 16  # patches of a 96 x 96 well: quadrants of 48, a tune band of 16 rows


def ingest(tmp_path: Path, stack, targets, name="well.ome.zarr", *extra) -> Path:
    folder = write_well_dir(tmp_path / f"{name}-pngs", stack, targets)
    out = tmp_path / name
    assert main(["isl-ingest", "--dir", str(folder), "--out", str(out), *extra]) == 0
    return out


def patches(well: Path, out: Path, split="train", *extra) -> Path:
    argv = ["isl-patches", "--well", str(well), "--split", split, "--size", str(SIZE), "--tune-band", str(BAND),
            "--out", str(out), *extra]  # fmt: skip
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def well(tmp_path_factory) -> tuple[Path, np.ndarray, dict]:
    d = tmp_path_factory.mktemp("well")
    stack, targets = synthetic_well((96, 96), planes=5, seed=3)
    return ingest(d, stack, targets), stack, targets


# ----------------------------------------------------------------------------------------------- the well
def test_ingest_round_trips_pixels_and_normalisation(tmp_path):
    """11 planes (z_depth-10 sorts after z_depth-9), several chunks; a mask and another channel passed over."""
    stack, targets = synthetic_well((64, 48), planes=11, seed=1)
    out = ingest(tmp_path, stack, targets, "w.ome.zarr", "--chunks", "16")
    well = open_well(out)
    assert well.labels == ("DAPI", "MAP2", "NFH") and well.planes == 11 and well.shape == (64, 48)
    np.testing.assert_array_equal(well.stack.compute(), stack)
    np.testing.assert_array_equal(well.targets.compute(), np.stack([targets[k] for k in well.labels]))
    assert well.stack.dtype == np.uint16 and well.targets.dtype == np.uint16
    assert well.normalization[INPUT_CHANNEL] == normalization(stack)
    for label in well.labels:
        assert well.normalization[label] == normalization(targets[label])
    roles = [(s["role"], s.get("z"), Path(s["path"]).name) for s in well.sources]
    assert roles == [(INPUT_CHANNEL, z, plane_name(z)) for z in range(11)] + [(k, None, target_name(k)) for k in
                                                                               well.labels]  # fmt: skip
    import hashlib

    assert well.sources[10]["sha256"] == hashlib.sha256(Path(well.sources[10]["path"]).read_bytes()).hexdigest()
    meta = json.loads((out / "zarr.json").read_text())["attributes"]
    assert meta["ome"]["version"] == "0.5" and meta["ome"]["omero"]["channels"] == [{"label": INPUT_CHANNEL}]
    assert [a["name"] for a in meta["ome"]["multiscales"][0]["axes"]] == list("czyx")
    sub = json.loads((out / "targets" / "zarr.json").read_text())["attributes"]["ome"]
    assert [c["label"] for c in sub["omero"]["channels"]] == list(well.labels)
    assert json.loads((out / "0" / "zarr.json").read_text())["chunk_grid"]["configuration"]["chunk_shape"] == [
        1, 1, 16, 16]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.ome.zarr", "w.ome.zarr-pngs"]  # no temporaries


def test_ingest_explicit_files_some_labels_uint8(tmp_path):
    stack, targets = synthetic_well((32, 32), planes=3, labels=("NFH", "DAPI"), seed=2, dtype=np.uint8)
    folder = write_well_dir(tmp_path / "pngs", stack, targets, extra=False)
    out = tmp_path / "w.ome.zarr"
    argv = ["isl-ingest", "--inputs", *(str(folder / plane_name(z)) for z in range(3)), "--targets",
            f"NFH={folder / target_name('NFH')}", f"DAPI={folder / target_name('DAPI')}", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    well = open_well(out)
    assert well.labels == ("DAPI", "NFH") and well.stack.dtype == np.uint8
    np.testing.assert_array_equal(well.targets.compute(), np.stack([targets["DAPI"], targets["NFH"]]))
    np.testing.assert_array_equal(well.stack.compute(), stack)


@pytest.mark.realdata
def test_ingest_real_well(shared_data, tmp_path):
    out = tmp_path / "real.ome.zarr"
    assert main(["isl-ingest", "--dir", str(shared_data / REAL_WELL), "--out", str(out)]) == 0
    well = open_well(out)
    assert well.planes == 13 and well.labels == ("DAPI", "MAP2", "NFH") and well.shape == (1024, 1024)
    assert well.stack.dtype == np.uint16
    for channel in (INPUT_CHANNEL, *well.labels):
        assert well.normalization[channel]["low"] < well.normalization[channel]["high"]
    # plane order is numeric: plane 10 is the file z_depth-10, not the third in name order
    assert well.sources[10]["z"] == 10 and ",z_depth-10," in well.sources[10]["path"]
    stack, norm = read_stack(out)
    assert stack.shape == (13, 1024, 1024) and norm == well.normalization[INPUT_CHANNEL]


def test_read_stack_of_well_ome_zarr_and_tiff(well, tmp_path):
    import tifffile

    path, stack, _ = well
    got, norm = read_stack(path)
    np.testing.assert_array_equal(got.compute(), stack)
    assert norm == open_well(path).normalization[INPUT_CHANNEL]
    tif = tmp_path / "stack.tif"
    tifffile.imwrite(tif, stack)
    got, norm = read_stack(tif)
    np.testing.assert_array_equal(got.compute(), stack)
    assert norm == normalization(stack)
    plain = tmp_path / "stack.ome.zarr"
    assert main(["ingest-image", "--image", str(tif), "--out", str(plain), "--levels", "1"]) == 0
    got, norm = read_stack(plain)
    np.testing.assert_array_equal(got.compute(), stack)
    assert norm == normalization(stack)
    two = tmp_path / "two.tif"
    tifffile.imwrite(two, np.stack([stack, stack]), metadata={"axes": "CZYX"})
    with pytest.raises(UserError, match=r"two\.tif: a z-stack needs axes zyx .*c=2"):
        read_stack(two)


# ---------------------------------------------------------------------------------------------- the split
def test_inside_windows_is_the_brute_force_answer():
    rng = np.random.default_rng(0)
    mask = rng.choice([TRAIN, TUNE], size=(23, 17), p=[0.9, 0.1]).astype(np.uint8)
    for size in (1, 3, 5, 30):
        got = inside_windows(mask, TRAIN, size)
        want = np.array([[(mask[y : y + size, x : x + size] == TRAIN).all() for x in range(17 - size + 1)]
                         for y in range(23 - size + 1)], bool).reshape(max(0, 24 - size), max(0, 18 - size))  # fmt: skip
        np.testing.assert_array_equal(got, want)


def test_every_window_lies_wholly_in_its_split(well, tmp_path):
    import zarr

    path = well[0]
    mask = split_mask((96, 96), "bottom-right", BAND)
    for split, extra in (("train", ["--patches", "200"]), ("tune", []), ("test", [])):
        _, _, attrs = load_patches(patches(path, tmp_path / f"{split}.zarr", split, *extra))
        origin = zarr.open_group(str(tmp_path / f"{split}.zarr"), mode="r")["origin"][:]
        for y, x in origin:
            assert (mask[y : y + SIZE, x : x + SIZE] == SPLITS[split]).all(), (split, y, x)
        assert attrs["split"] == split and attrs["size"] == SIZE and attrs["tune_band"] == BAND
    # the tune band: rows 80..95 under the bottom-left quadrant, a grid of 3 windows; the test quadrant: 3 x 3
    tune = zarr.open_group(str(tmp_path / "tune.zarr"), mode="r")["origin"][:]
    assert tune.tolist() == [[80, 0], [80, 16], [80, 32]]
    assert zarr.open_group(str(tmp_path / "test.zarr"), mode="r")["origin"].shape == (9, 2)
    # round-robin: the shards of a split share out its grid, each window once
    shards = [patches(path, tmp_path / f"test-{i}.zarr", "test", "--shard", f"{i}/2") for i in range(2)]
    dealt = np.concatenate([zarr.open_group(str(s), mode="r")["origin"][:] for s in shards])
    whole = zarr.open_group(str(tmp_path / "test.zarr"), mode="r")["origin"][:]
    assert sorted(map(tuple, dealt)) == sorted(map(tuple, whole))
    assert load_patches(shards)[0].shape == (9, SIZE, SIZE, 5)


# ---------------------------------------------------------------------------------------------- augmentation
def test_augmentation_moves_inputs_and_targets_together(tmp_path):
    """A well whose DAPI target is its plane 2: after augmentation the target still equals (linearly) the
    input's plane 2, patch by patch; inputs are the transformed window times c plus b, one c and b for all
    planes; targets are the transformed window exactly, never jittered."""
    import zarr

    stack, targets = synthetic_well((96, 96), planes=4, labels=("DAPI",), seed=5)
    targets["DAPI"] = stack[2].copy()
    path = ingest(tmp_path, stack, targets)
    well = open_well(path)
    out = patches(path, tmp_path / "train.zarr", "train", "--patches", "70", "--seed", "4")
    group = zarr.open_group(str(out), mode="r")
    assert group["inputs"].chunks == (32, SIZE, SIZE, 4)
    assert sorted(p.name for p in (out / "inputs" / "c").iterdir()) == ["0", "1", "2"]  # three chunks of patches
    x, y, attrs = load_patches([out])
    assert x.dtype == y.dtype == np.float16 and x.shape == (70, SIZE, SIZE, 4) and y.shape == (70, SIZE, SIZE, 1)
    assert attrs["augment"] == {"dihedral": True, "contrast": [0.8, 1.25], "brightness": [-0.1, 0.1]}
    transforms = group["transform"][:]
    assert set(transforms.tolist()) == set(range(8))
    norm_stack = np.moveaxis(normalize(stack, well.normalization[INPUT_CHANNEL]), 0, -1)
    norm_target = np.clip(normalize(stack[2], well.normalization["DAPI"]), 0, 1)[..., None]
    for i, ((top, left), k) in enumerate(zip(group["origin"][:], transforms)):
        window = (slice(top, top + SIZE), slice(left, left + SIZE))
        np.testing.assert_array_equal(y[i], dihedral(norm_target[window], k).astype(np.float16))
        clean = dihedral(norm_stack[window], k).ravel()
        design = np.stack([clean, np.ones_like(clean)], axis=1)
        (c, b), *_ = np.linalg.lstsq(design, x[i].astype(np.float32).ravel(), rcond=None)
        assert 0.8 - 1e-3 <= c <= 1.25 + 1e-3 and -0.1 - 1e-3 <= b <= 0.1 + 1e-3, (i, c, b)
        assert np.abs(design @ (c, b) - x[i].ravel()).max() < 3e-3, i
        # the target, a function of plane 2, is still that function of the input's plane 2
        inside = (y[i, ..., 0] > 0.01) & (y[i, ..., 0] < 0.99)
        pair = np.stack([x[i, ..., 2][inside], y[i, ..., 0][inside]]).astype(np.float32)
        assert np.corrcoef(pair)[0, 1] > 0.999, i
    plain = patches(path, tmp_path / "plain.zarr", "train", "--patches", "70", "--seed", "4", "--no-augment")
    xp, _, attrs = load_patches([plain])
    assert attrs["augment"] is None and not zarr.open_group(str(plain), mode="r")["transform"][:].any()
    origin = zarr.open_group(str(plain), mode="r")["origin"][:]
    np.testing.assert_array_equal(origin, group["origin"][:])  # the same windows, drawn before augmentation
    top, left = origin[7]
    np.testing.assert_array_equal(xp[7], norm_stack[top : top + SIZE, left : left + SIZE].astype(np.float16))


def test_dihedral_is_the_group_of_the_square():
    a = np.arange(12).reshape(3, 4)
    images = [dihedral(a, k) for k in range(8)]
    assert len({im.tobytes() + bytes(im.shape) for im in images}) == 8
    np.testing.assert_array_equal(images[0], a)
    np.testing.assert_array_equal(images[4], a[:, ::-1])


# ---------------------------------------------------------------------------------------------- determinism
def test_a_shard_is_a_pure_function_of_seed_and_shard(well, tmp_path):
    import zarr

    path = well[0]
    common = ["--patches", "40", "--seed", "9"]
    a = patches(path, tmp_path / "a.zarr", "train", *common, "--shard", "1/3")
    b = patches(path, tmp_path / "b.zarr", "train", *common, "--shard", "1/3")
    other = patches(path, tmp_path / "c.zarr", "train", *common, "--shard", "2/3")
    seed = patches(path, tmp_path / "d.zarr", "train", "--patches", "40", "--seed", "10", "--shard", "1/3")
    manifest = [json.loads((s / "zarr.json").read_text())["attributes"]["integrity"] for s in (a, b)]
    assert manifest[0] == manifest[1]  # every chunk, byte for byte
    origins = {s.name: zarr.open_group(str(s), mode="r")["origin"][:] for s in (a, other, seed)}
    assert not np.array_equal(origins["a.zarr"], origins["c.zarr"])
    assert not np.array_equal(origins["a.zarr"], origins["d.zarr"])
    x, _, attrs = load_patches([a, other])
    assert x.shape[0] == 80 and attrs["patches"] == 80 and attrs["shards"] == [str(a), str(other)]
    x_lazy, _, _ = open_patches([a, other])
    assert x_lazy.shape == x.shape
    with pytest.raises(UserError, match=r"b\.zarr: the same shard as .*a\.zarr"):
        load_patches([a, b])
    other_size = tmp_path / "e.zarr"
    assert main(["isl-patches", "--well", str(path), "--split", "train", "--size", "8", "--tune-band", str(BAND),
                 "--patches", "5", "--shard", "0/3", "--out", str(other_size)]) == 0  # fmt: skip
    with pytest.raises(UserError, match=r"e\.zarr: does not match .*a\.zarr \(size 8 vs 16\)"):
        load_patches([a, other_size])
    with pytest.raises(UserError, match="not an In Silico Labeling patch shard"):
        load_patches([path])


# ---------------------------------------------------------------------------------------------- bad input
def _missing_plane(d: Path):
    (d / plane_name(2)).unlink()


def _plane_of_other_size(d: Path):
    from PIL import Image

    Image.fromarray(np.zeros((96, 80), np.uint16)).save(d / plane_name(3))


def _plane_of_other_type(d: Path):
    from PIL import Image

    Image.fromarray(np.zeros((96, 96), np.uint8)).save(d / plane_name(1))


def _rgb_target(d: Path):
    from PIL import Image

    Image.fromarray(np.zeros((96, 96, 3), np.uint8)).save(d / target_name("MAP2"))


def _no_targets(d: Path):
    for label in ("DAPI", "MAP2", "NFH"):
        (d / target_name(label)).unlink()


def _empty(d: Path):
    for f in d.iterdir():
        f.unlink()


@pytest.mark.parametrize("damage, names, words", [
    (_missing_plane, "pngs", "z_depth-2 missing"),
    (_plane_of_other_size, plane_name(3), "96x80"),
    (_plane_of_other_type, plane_name(1), "uint8 pixels"),
    (_rgb_target, target_name("MAP2"), "2-D grey image"),
    (_no_targets, "pngs", "no target images"),
    (_empty, "pngs", "no phase-contrast planes"),
])  # fmt: skip
def test_bad_well_folder_gets_one_line_and_no_output(tmp_path, capsys, damage, names, words):
    stack, targets = synthetic_well((96, 96), planes=5, seed=0)
    folder = write_well_dir(tmp_path / "pngs", stack, targets)
    damage(folder)
    out = tmp_path / "out" / "w.ome.zarr"
    out.parent.mkdir()
    assert main(["isl-ingest", "--dir", str(folder), "--out", str(out)]) == 2
    _one_error_line(capsys, "isl-ingest", names, words)
    assert list(out.parent.iterdir()) == []


def test_bad_patch_inputs_get_one_line_and_no_output(well, tmp_path, capsys):
    image = tmp_path / "plain.ome.zarr"
    tif = tmp_path / "plane.tif"
    import tifffile

    tifffile.imwrite(tif, well[1][0])
    assert main(["ingest-image", "--image", str(tif), "--out", str(image)]) == 0
    capsys.readouterr()
    out = tmp_path / "out" / "p.zarr"
    out.parent.mkdir()
    cases = [
        (["--well", str(image), "--split", "tune"], "plain.ome.zarr", "not an In Silico Labeling well"),
        (["--well", str(well[0]), "--split", "train", "--patches", "4", "--size", "64"], "well.ome.zarr",
         "no 64x64 window"),
        (["--well", str(well[0]), "--split", "tune", "--tune-band", "8"], "well.ome.zarr", "or a wider --tune-band"),
        (["--well", str(well[0]), "--split", "train"], "well.ome.zarr", "--patches"),
        (["--well", str(well[0]), "--split", "test", "--shard", "9/10"], "well.ome.zarr", "only 9 16x16 windows"),
        (["--well", str(well[0]), "--split", "test", "--tune-band", "60"], "well.ome.zarr", "60 does not fit"),
    ]
    for argv, names, words in cases:
        assert main(["isl-patches", "--size", str(SIZE), "--tune-band", str(BAND), *argv, "--out", str(out)]) == 2
        _one_error_line(capsys, "isl-patches", names, words)
        assert list(out.parent.iterdir()) == []


def _one_error_line(capsys, stage: str, names: str, words: str) -> None:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"deepflows {stage}: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert names in errors[0] and words in errors[0], errors[0]
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------- the workflow
@pytest.mark.workflow
def test_dry_run_of_imaging_isl(tmp_path, repo_root):
    """`snakemake -n imaging_isl` over config/imaging-isl.yaml, pointed at a synthetic well: ingest once, the
    configured train and tune shards, then train, predict, ridge, evaluate; a tune band narrower than a patch
    stops the run with one line."""
    import os
    import subprocess
    import sys

    import yaml

    stack, targets = synthetic_well((64, 64), planes=3, seed=0)
    folder = write_well_dir(tmp_path / "pngs", stack, targets)
    (tmp_path / "train.yaml").write_text("steps: 1\n")
    override = tmp_path / "override.yaml"

    def dry_run(**isl):
        override.write_text(yaml.safe_dump({"isl": {"data": str(folder), "model_config": str(tmp_path / "train.yaml"),
                                                    "unet_config": str(tmp_path / "train.yaml"),
                                                    "model": None, "unet_model": None,
                                                    "train_shards": 3, **isl}}))  # fmt: skip
        env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}
        return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo_root / "Snakefile"), "--configfile",
                               str(repo_root / "config" / "imaging-isl.yaml"), str(override), "-n", "-p",
                               "imaging_isl"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip

    run = dry_run()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    counts = {m[0]: int(m[1]) for m in (line.split() for line in run.stdout.splitlines()) if len(m) == 2 and
              m[1].isdigit()}  # fmt: skip
    assert {k: counts.get(k) for k in ("isl_ingest", "isl_patches", "isl_train", "isl_predict", "isl_ridge",
                                       "isl_evaluate")} == {"isl_ingest": 1, "isl_patches": 4, "isl_train": 2,
                                                            "isl_predict": 2, "isl_ridge": 1, "isl_evaluate": 1}  # fmt: skip
    assert "--split train --shard 2/3 --size 96 --patches 2000 --seed 0" in run.stdout
    assert "tune-00000-of-00001.zarr" in run.stdout and "--baseline ridge=" in run.stdout
    assert "--baseline unet=" in run.stdout and "train/unet/model" in run.stdout
    run = dry_run(model=str(tmp_path / "no-such-model"))
    assert run.returncode != 0 and "error: isl.model: " in run.stderr and "not found" in run.stderr
    run = dry_run(tune_band=64, patch_size=96)
    assert run.returncode != 0 and "isl.tune_band: 64 rows hold no 96-pixel tune patch" in run.stderr
