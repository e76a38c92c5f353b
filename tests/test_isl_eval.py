"""In Silico Labeling: the ridge baseline (`isl-ridge`) and the evaluation (`isl-evaluate`) on synthetic wells
whose answers are known, their refusals of bad input, and the ridge on the real well.

Until deepflows.imaging.isl.well lands, the wells here are objects with the attributes its `open_well` returns
(`stack`, `targets`, `labels`, `normalization`), served by a stand-in module under that name."""

from __future__ import annotations

import json
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")

from scipy import ndimage as ndi

from deepflows.cli import main
from deepflows.errors import UserError
from deepflows.imaging.isl import INPUT_CHANNEL, LABELS, TEST, TRAIN, TUNE, normalization, normalize, split_mask
from deepflows.imaging.isl.baselines import (block_features, feature_names, feature_radius, features, fit,
                                             fit_pixels, row_blocks)  # fmt: skip
from deepflows.imaging.isl.evaluate import coverage, uncertainty_bins
from deepflows.imaging.isl.prediction_store import open_predictions, write_predictions

SIZE, PLANES, SIGMAS = 128, 5, (1.0, 2.0, 4.0)
STACK_NORM = {"low": 1000.0, "high": 11000.0, "percentiles": [0.5, 99.9]}
TARGET_NORM = {"low": 500.0, "high": 20500.0, "percentiles": [0.5, 99.9]}
Z = {"q05": -1.6448536, "q25": -0.6744898, "median": 0.0, "mean": 0.0, "q75": 0.6744898, "q95": 1.6448536}


@dataclass
class Well:
    """What deepflows.imaging.isl.well.open_well returns, as far as these stages read it."""

    stack: object  # [z, y, x] raw
    targets: object  # [labels, y, x] raw
    labels: tuple
    normalization: dict


@pytest.fixture
def wells(monkeypatch):
    """path -> Well, served by a stand-in deepflows.imaging.isl.well module."""
    served: dict[str, Well] = {}

    def open_well(path):
        if str(path) not in served:
            raise UserError(f"{path}: well not found")
        return served[str(path)]

    module = types.ModuleType("deepflows.imaging.isl.well")
    module.open_well = open_well
    monkeypatch.setitem(sys.modules, "deepflows.imaging.isl.well", module)
    return served


def as_well(stack_norm: np.ndarray, targets_norm: np.ndarray, labels=LABELS) -> Well:
    """Normalised arrays -> a well of raw uint16 (with the normalisation that maps them back)."""
    import dask.array as da

    raw_stack = np.round(stack_norm * (STACK_NORM["high"] - STACK_NORM["low"]) + STACK_NORM["low"])
    raw_targets = np.round(np.clip(targets_norm, -0.02, 1.02) * (TARGET_NORM["high"] - TARGET_NORM["low"])
                           + TARGET_NORM["low"])  # fmt: skip
    norms = {INPUT_CHANNEL: STACK_NORM, **{label: TARGET_NORM for label in labels}}
    return Well(da.from_array(raw_stack.astype(np.uint16), chunks=(1, 64, 64)),
                da.from_array(raw_targets.astype(np.uint16), chunks=(1, 64, 64)), tuple(labels), norms)  # fmt: skip


def synthetic_stack(seed: int = 0, size: int = SIZE) -> np.ndarray:
    """Normalised planes around 0.5: noise blurred at sigma 1."""
    rng = np.random.default_rng(seed)
    planes = np.stack([ndi.gaussian_filter(rng.normal(size=(size, size)), 1.0) for _ in range(PLANES)])
    return (0.5 + 0.1 * planes / planes.std()).astype(np.float32)


def linear_targets(stack: np.ndarray) -> np.ndarray:
    """Three labels, each a different linear function of blurred planes, spread over 0.5 +- 0.45."""
    g = lambda i, s: ndi.gaussian_filter(stack[i].astype(np.float64), s, truncate=4.0)  # noqa: E731
    parts = [g(0, 2) - g(3, 4), g(1, 1) + 2 * g(2, 4), g(4, 2) - g(0, 1) + g(1, 4)]
    return np.stack([0.5 + 0.13 * (u - u.mean()) / u.std() for u in parts]).astype(np.float32)


def truth_of(well: Well) -> np.ndarray:
    """The evaluation's truth: normalised, clipped targets [labels, y, x]."""
    return np.stack([np.clip(normalize(np.asarray(well.targets[j]), TARGET_NORM), 0, 1)
                     for j in range(len(well.labels))])  # fmt: skip


def store(path: Path, channels: dict[tuple[str, str], np.ndarray], model: str = "test") -> Path:
    return write_predictions(path, np.stack(list(channels.values())), list(channels), model=model)


def fail(capsys, argv: list[str]) -> str:
    """Run a stage expected to refuse its input: exit 2 and one error line, which is returned."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], lines
    return lines[0]


# ----------------------------------------------------------------------------- ridge


def test_block_features_equal_the_whole_image():
    stack = synthetic_stack(1, 96)
    raw = np.round(stack * 10000 + 1000).astype(np.uint16)
    whole = features(normalize(raw, STACK_NORM), SIGMAS)
    assert whole.shape == (len(feature_names(PLANES, SIGMAS)), 96, 96) and np.isfinite(whole).all()
    blocks = row_blocks(96, 96, whole.shape[0], budget=whole.shape[0] * 96 * 4 * 20)  # 20 rows a block
    assert len(blocks) == 5
    joined = np.concatenate([block_features(raw, STACK_NORM, a, b, SIGMAS) for a, b in blocks], axis=1)
    np.testing.assert_allclose(joined, whole, rtol=1e-5, atol=1e-6)


def test_fit_pixels_keep_clear_of_the_test_quadrant():
    mask = split_mask((SIZE, SIZE), "bottom-right", 16)
    radius = feature_radius(SIGMAS)
    for split in (TRAIN, TUNE):
        ys, xs = np.nonzero(fit_pixels(mask, split, radius))
        assert len(ys) and (mask[ys, xs] == split).all()
        assert not ((ys >= SIZE // 2 - radius) & (xs >= SIZE // 2 - radius)).any()


def test_ridge_recovers_a_linear_target_and_never_reads_test(wells, tmp_path):
    stack = synthetic_stack(0)
    well = as_well(stack, linear_targets(stack))
    wells["well"] = well
    out = tmp_path / "ridge.ome.zarr"
    assert main(["isl-ridge", "--well", "well", "--out", str(out), "--sigmas", "1,2,4", "--tune-band", "16",
                 "--pixels", "4000", "--seed", "3"]) == 0  # fmt: skip
    pred = open_predictions(out, LABELS, (SIZE, SIZE))
    assert sorted(pred.channels) == sorted((label, "mean") for label in LABELS)
    attrs = pred.attrs["ridge"]
    assert attrs["sigmas"] == list(SIGMAS) and len(attrs["features"]) == len(feature_names(PLANES, SIGMAS))
    assert attrs["split"]["test_quadrant"] == "bottom-right" and attrs["pixels"]["train"] == 4000
    test = split_mask((SIZE, SIZE), "bottom-right", 16) == TEST
    truth = truth_of(well)
    for j, label in enumerate(LABELS):
        predicted = np.asarray(pred.get(label, "mean"))
        assert predicted.dtype == np.float32 and predicted.min() >= 0 and predicted.max() <= 1
        assert np.corrcoef(predicted[test], truth[j][test])[0, 1] > 0.95, label
        assert attrs["tune_r"][label] > 0.95
    again = tmp_path / "again.ome.zarr"  # the same seed, the same predictions
    assert main(["isl-ridge", "--well", "well", "--out", str(again), "--sigmas", "1,2,4", "--tune-band", "16",
                 "--pixels", "4000", "--seed", "3"]) == 0  # fmt: skip
    np.testing.assert_array_equal(np.asarray(open_predictions(again, LABELS, (SIZE, SIZE)).image),
                                  np.asarray(pred.image))  # fmt: skip

    # Garbage in the test quadrant's targets and inputs changes nothing of the fit.
    mask = split_mask((SIZE, SIZE), "bottom-right", 16)
    rng = np.random.default_rng(9)
    spoiled_stack, spoiled_targets = stack.copy(), linear_targets(stack)
    spoiled_stack[:, test] = rng.uniform(-5, 5, size=(PLANES, int(test.sum())))
    spoiled_targets[:, test] = rng.uniform(0, 1, size=(len(LABELS), int(test.sum())))
    spoiled = as_well(spoiled_stack, spoiled_targets)
    fits = [fit(w.stack, w.targets, LABELS, w.normalization, mask, SIGMAS, 4000, seed=3) for w in (well, spoiled)]
    assert fits[0].alpha == fits[1].alpha and fits[0].tune == fits[1].tune
    np.testing.assert_array_equal(fits[0].weights, fits[1].weights)
    np.testing.assert_array_equal(fits[0].mean, fits[1].mean)


def test_ridge_refuses_a_split_with_no_room(wells, tmp_path, capsys):
    wells["well"] = as_well(synthetic_stack(0, 64), linear_targets(synthetic_stack(0, 64)))
    line = fail(capsys, ["isl-ridge", "--well", "well", "--out", str(tmp_path / "r.ome.zarr"), "--sigmas", "16",
                      "--tune-band", "16"])
    assert "clear of the test quadrant" in line
    line = fail(capsys, ["isl-ridge", "--well", "well", "--out", str(tmp_path / "r.ome.zarr"), "--tune-band", "40"])
    assert "--tune-band 40" in line
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- evaluation


def test_metrics():
    truth = np.array([0.1, 0.2, 0.5, 0.9])
    assert coverage(truth, truth + 0.001, truth + 0.1) == 1.0  # within half a bin (1/512) below
    assert coverage(truth, truth + 0.003, truth + 0.1) == 0.0
    rows = uncertainty_bins(np.repeat([0.0, 1.0], 50), np.repeat([0.1, 0.3], 50), bins=10)
    assert [r["pixels"] for r in rows] == [10] * 10  # ties still make equal-count bins
    assert rows[0]["mae"] == pytest.approx(0.1) and rows[-1]["mae"] == pytest.approx(0.3)


def test_perfect_and_noise_predictions(wells, tmp_path):
    stack = synthetic_stack(0)
    well = as_well(stack, linear_targets(stack))
    wells["well"] = well
    truth = truth_of(well)
    rng = np.random.default_rng(0)
    perfect = store(tmp_path / "perfect.ome.zarr", {(label, "mean"): truth[j] for j, label in enumerate(LABELS)})
    noise = store(tmp_path / "noise.ome.zarr", {(label, "mean"): rng.uniform(0, 1, (SIZE, SIZE)) for label in LABELS})
    out = tmp_path / "eval"
    assert main(["isl-evaluate", "--well", "well", "--predictions", str(perfect), "--baseline", f"noise={noise}",
                 "--tune-band", "16", "--out", str(out)]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    for label in LABELS:
        assert summary["labels"][label]["ours"]["r"] == pytest.approx(1.0, abs=1e-6)
        assert summary["labels"][label]["ours"]["rmse"] < 1e-5
        assert abs(summary["labels"][label]["noise"]["r"]) < 0.06
        assert summary["labels"][label]["ours"]["pixels"] == (SIZE // 2) ** 2
    lines = (out / "pearson.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["label", "model", "statistic", "r", "rmse", "pixels"] and len(lines) == 7
    assert (out / "calibration.tsv").read_text().strip() == "label\tmodel\tinterval\tnominal\tcoverage\tmean_width\tpixels"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["pearson.tsv", "calibration.tsv", "uncertainty_bins.tsv", "summary.json",
                            "uncertainty.png", *(f"panels_{label}.png" for label in LABELS)])  # fmt: skip


def test_quantiles_of_the_true_distribution_are_calibrated(wells, tmp_path):
    """Targets drawn per pixel from N(mu, sigma); the prediction writes that distribution's own quantiles:
    coverage near 0.5 and 0.9, error rising with the width and the entropy."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    mu = 0.5 + 0.1 * np.sin(6 * yy) * np.cos(5 * xx)
    sigma = 0.03 + 0.09 * ((np.sin(9 * xx + 3 * yy) + 1) / 2)
    targets = np.stack([mu + sigma * rng.normal(size=mu.shape) for _ in LABELS])
    wells["well"] = as_well(synthetic_stack(0), targets)
    channels = {}
    for label in LABELS:
        channels.update({(label, q): mu + sigma * z for q, z in Z.items()})
        channels[(label, "entropy")] = np.log2(sigma * np.sqrt(2 * np.pi * np.e)) + 8  # of 256 bins
    pred = store(tmp_path / "dist.ome.zarr", channels, model="distribution")
    out = tmp_path / "eval"
    assert main(["isl-evaluate", "--well", "well", "--predictions", str(pred), "--tune-band", "16",
                 "--out", str(out)]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    for label in LABELS:
        scores = summary["labels"][label]["ours"]
        assert scores["statistic"] == "mean"
        assert scores["coverage_q25_q75"] == pytest.approx(0.5, abs=0.04)
        assert scores["coverage_q05_q95"] == pytest.approx(0.9, abs=0.03)
        assert scores["spearman_width"] > 0.9 and scores["spearman_entropy"] > 0.9
    bins = (out / "uncertainty_bins.tsv").read_text().splitlines()
    assert len(bins) == 1 + len(LABELS) * 2 * 10
    calibration = (out / "calibration.tsv").read_text().splitlines()
    assert len(calibration) == 1 + len(LABELS) * 2


def test_only_the_requested_split_is_scored(wells, tmp_path):
    stack = synthetic_stack(0)
    well = as_well(stack, linear_targets(stack))
    wells["well"] = well
    truth = truth_of(well)
    mask = split_mask((SIZE, SIZE), "top-left", 16)
    rng = np.random.default_rng(1)
    right_on_test = {(label, "mean"): np.where(mask == TEST, truth[j], rng.uniform(0, 1, (SIZE, SIZE)))
                     for j, label in enumerate(LABELS)}  # fmt: skip
    pred = store(tmp_path / "p.ome.zarr", right_on_test)
    for split, expect in (("test", 1.0), ("tune", 0.0), ("train", 0.0)):
        out = tmp_path / split
        assert main(["isl-evaluate", "--well", "well", "--predictions", str(pred), "--split", split,
                     "--test-quadrant", "top-left", "--tune-band", "16", "--out", str(out)]) == 0  # fmt: skip
        summary = json.loads((out / "summary.json").read_text())
        assert summary["pixels"] == int((mask == {"test": TEST, "tune": TUNE, "train": TRAIN}[split]).sum())
        for label in LABELS:
            assert summary["labels"][label]["ours"]["r"] == pytest.approx(expect, abs=0.06)


def test_bad_prediction_stores_are_refused(wells, tmp_path, capsys):
    stack = synthetic_stack(0)
    well = as_well(stack, linear_targets(stack))
    wells["well"] = well
    truth = truth_of(well)
    missing = store(tmp_path / "missing.ome.zarr", {(label, "mean"): truth[j] for j, label in enumerate(LABELS[:2])})
    small = store(tmp_path / "small.ome.zarr", {(label, "mean"): truth[j, :64] for j, label in enumerate(LABELS)})
    good = store(tmp_path / "good.ome.zarr", {(label, "mean"): truth[j] for j, label in enumerate(LABELS)})
    out = tmp_path / "eval"
    cases = [(["--predictions", str(missing)], f"no '{LABELS[2]} mean' or '{LABELS[2]} median' channel"),
             (["--predictions", str(good), "--baseline", f"small={small}"], "predictions are 64 x 128 pixels"),
             (["--predictions", str(tmp_path / "nowhere")], "prediction store not found"),
             (["--predictions", str(good), "--baseline", f"ours={good}"], "given twice"),
             (["--predictions", str(missing), "--labels", "GFP"], "--labels: GFP is not a label of")]  # fmt: skip
    for extra, message in cases:
        line = fail(capsys, ["isl-evaluate", "--well", "well", *extra, "--tune-band", "16", "--out", str(out)])
        assert message in line, line
        assert not out.exists() and not list(tmp_path.glob("eval*"))
    # a model of some labels is scored on those (--labels), as transfer learning's one-label models are
    assert main(["isl-evaluate", "--well", "well", "--predictions", str(missing), "--labels", ",".join(LABELS[:2]),
                 "--tune-band", "16", "--out", str(out)]) == 0  # fmt: skip
    assert set(json.loads((out / "summary.json").read_text())["labels"]) == set(LABELS[:2])


# ----------------------------------------------------------------------------- the real well



def png_well(folder: Path) -> Well:
    """The condition_blue_sample PNGs as a well: 13 phase-contrast planes and the three confocal labels, with
    the contract's percentile normalisation (deepflows.imaging.isl.normalization)."""
    from deepflows.imaging.io import read_image

    planes, labels = {}, {}
    for path in folder.glob("*.png"):
        if m := re.search(r"z_depth-(\d+),channel-PHASE_CONTRAST", path.name):
            planes[int(m.group(1))] = read_image(path)[0]
        elif m := re.search(r"channel-(\w+?)_CONFOCAL", path.name):
            labels[m.group(1)] = read_image(path)[0]
    stack = np.stack([planes[z] for z in sorted(planes)])
    targets = np.stack([labels[label] for label in LABELS])
    norms = {INPUT_CHANNEL: normalization(stack), **{label: normalization(labels[label]) for label in LABELS}}
    return Well(stack, targets, LABELS, norms)


@pytest.mark.realdata
def test_ridge_on_the_real_well(shared_data, wells, tmp_path):
    """The default ridge on condition_blue_sample (bottom-right test quadrant, tune band 96), scored by
    isl-evaluate: a classical baseline that finds nuclei and dendrites, neurofilament less so."""
    wells["real"] = png_well(shared_data / "imaging" / "in_silico_labeling" / "condition_blue_sample")
    ridge = tmp_path / "ridge.ome.zarr"
    assert main(["isl-ridge", "--well", "real", "--out", str(ridge)]) == 0
    assert main(["isl-evaluate", "--well", "real", "--predictions", str(ridge), "--name", "ridge",
                 "--out", str(tmp_path / "eval")]) == 0  # fmt: skip
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    r = {label: summary["labels"][label]["ridge"]["r"] for label in LABELS}
    # Seeded, so these repeat: r = 0.796, 0.844 and 0.485 when written.
    assert r["DAPI"] > 0.75 and r["MAP2"] > 0.8 and r["NFH"] > 0.4, r
