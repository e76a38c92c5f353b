"""Tiny synthetic In Silico Labeling wells: a phase-contrast z-stack and fluorescence targets written as PNGs
with the file names of the ISL data set, for tests (the real well lives in ../shared/data, never in the repo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LABELS = ("DAPI", "MAP2", "NFH")
PREFIX = ("lab-TEST,condition-SYNTHETIC,acquisition_date,year-2015,month-10,day-5,minute-0,well-A1,"
          "tile_computation-STITCHED")  # fmt: skip


def plane_name(z: int) -> str:
    return f"{PREFIX},z_depth-{z},channel-PHASE_CONTRAST,is_mask-false.png"


def target_name(label: str) -> str:
    return f"{PREFIX},depth_computation-MAXPROJECT,channel-{label}_CONFOCAL,is_mask-false.png"


def synthetic_well(shape=(96, 96), planes: int = 5, labels=LABELS, seed: int = 0, dtype=np.uint16):
    """(stack [planes, H, W], {label: image [H, W]}) of `dtype`: a textured field seen through focus (each
    plane a different mix of the field and its gradient, plus noise), and targets that are smooth functions
    of the field (so that a model could learn them)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    field = sum(np.sin(x * fx + y * fy + p) for fx, fy, p in rng.uniform([0.05, 0.05, 0], [0.5, 0.5, 6], (6, 3)))
    field = (field - field.min()) / (np.ptp(field) or 1.0)
    grad = np.hypot(*np.gradient(field))
    grad /= grad.max() or 1.0
    top = np.iinfo(dtype).max
    stack = np.empty((planes, h, w), dtype)
    for z in range(planes):
        mix = (z - (planes - 1) / 2) / max(1, planes - 1)
        image = 0.2 + 0.5 * field + mix * grad + rng.normal(0, 0.02, shape)
        stack[z] = np.clip(image * 0.8 * top, 0, top).astype(dtype)
    functions = {"DAPI": field**3, "MAP2": grad, "NFH": np.sqrt(field) * grad}
    targets = {label: np.clip((0.05 + 0.9 * functions[label]) * top, 0, top).astype(dtype) for label in labels}
    return stack, targets


def write_well_dir(directory: Path, stack: np.ndarray, targets: dict, extra: bool = True) -> Path:
    """The planes and targets as ISL-named PNGs in `directory` (made if needed); with `extra`, also a mask and
    a file of another channel, which ingest must pass over."""
    from PIL import Image

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for z, plane in enumerate(stack):
        Image.fromarray(plane).save(directory / plane_name(z))
    for label, image in targets.items():
        Image.fromarray(image).save(directory / target_name(label))
    if extra:
        Image.fromarray(stack[0]).save(directory / plane_name(0).replace("is_mask-false", "is_mask-true"))
        Image.fromarray(stack[0]).save(directory / plane_name(0).replace("PHASE_CONTRAST", "BRIGHTFIELD"))
    return directory
