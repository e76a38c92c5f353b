"""Training and evaluation patches for the focus model, made from in-focus fields by synthetic defocus.

Each field is blurred once per level (deepflows.imaging.defocus, noise-free); patches are cut from those
stacks and get their Poisson noise when drawn. Evaluation sets are fixed patch grids at the image's own
brightness (gain 1). Training draws random positions, levels and augmentations, a pure function of the
seed and step: brightness and contrast (a scale), a background offset, the noise level (the gain, and
Gaussian read noise), flips and 90-degree rotations. Only patches whose left edge lies in the field's
train columns are drawn; the last `val_columns` columns are the validation split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepflows.errors import UserError
from deepflows.imaging.defocus import LEVELS, defocus_stack, poisson_noise
from deepflows.imaging.focus_model import PATCH, to_patches


def load_field(path: str | Path) -> np.ndarray:
    """One in-focus field as float32 [H, W]: a single plane, at least one patch in each direction."""
    from deepflows.imaging.io import read_image

    pixels, axes = read_image(path)
    if axes != "yx":
        raise UserError(f"{path}: a training field must be one 2-D plane, not axes '{axes}'")
    if min(pixels.shape) < PATCH:
        raise UserError(f"{path}: {pixels.shape[0]}x{pixels.shape[1]} is smaller than a {PATCH}x{PATCH} patch")
    return pixels.astype(np.float32)


def content_mask(field: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """Which grid patches [rows, cols] of an in-focus field show something: at least 2% of their pixels
    brighter than the background (the median) by a quarter of the field's range (99.9th percentile). This is
    ground truth for evaluation (it reads the in-focus field), never a model input."""
    background, top = np.median(field), np.percentile(field, 99.9)
    bright = to_patches(field, patch) > background + 0.25 * (top - background)
    return bright.mean(axis=(2, 3)) >= 0.02


class DefocusSet:
    """The defocus stacks [LEVELS, H, W] of a few in-focus fields."""

    def __init__(self, fields: list[np.ndarray], val_columns: int = 0):
        self.fields = fields
        self.stacks = [defocus_stack(f) for f in fields]
        self.val_columns = int(val_columns)
        for f in fields:
            if f.shape[1] - self.val_columns < PATCH:
                raise UserError(f"a {f.shape[1]}-pixel-wide field leaves no train columns beside {val_columns} "
                                "validation columns")  # fmt: skip
        # The brightest 3% of each field's train columns: centres for patches with content.
        self.bright = [np.argwhere(f[:, : f.shape[1] - self.val_columns] > np.percentile(f, 97)) for f in fields]

    def sample(self, rng: np.random.Generator, n: int, content_fraction: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
        """n augmented training patches [n, PATCH, PATCH] float32 and their levels. `content_fraction` of the
        patches are centred on a bright pixel (so that few steps are spent on empty background), the rest are
        anywhere: blank patches at every level are what teach the model to say 'uncertain'."""
        patches = np.empty((n, PATCH, PATCH), np.float32)
        levels = rng.integers(0, LEVELS, n)
        for i in range(n):
            k = int(rng.integers(len(self.stacks)))
            h, w = self.fields[k].shape[0], self.fields[k].shape[1] - self.val_columns
            if rng.random() < content_fraction and len(self.bright[k]):
                cy, cx = self.bright[k][int(rng.integers(len(self.bright[k])))]
                y = int(np.clip(cy - PATCH // 2, 0, h - PATCH))
                x = int(np.clip(cx - PATCH // 2, 0, w - PATCH))
            else:
                y, x = int(rng.integers(h - PATCH + 1)), int(rng.integers(w - PATCH + 1))
            patches[i] = augment(self.stacks[k][levels[i], y : y + PATCH, x : x + PATCH], rng)
        return patches, levels

    def grid(self, seed: int, columns: str = "all") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every grid patch of every field at every level, with Poisson noise at gain 1:
        (patches [n, PATCH, PATCH], levels [n], field index [n], has content [n]). `columns`: "all", or
        "val" for the validation columns only (the grid then starts at the first validation column)."""
        rng = np.random.default_rng(seed)
        out = ([], [], [], [])
        for k, (field, stack) in enumerate(zip(self.fields, self.stacks)):
            start = field.shape[1] - self.val_columns if columns == "val" else 0
            content = content_mask(field[:, start:]).ravel()
            for level in range(LEVELS):
                noisy = poisson_noise(stack[level][:, start:], rng)
                p = to_patches(noisy).reshape(-1, PATCH, PATCH)
                for lst, value in zip(out, (p, np.full(len(p), level), np.full(len(p), k), content)):
                    lst.append(value)
        return tuple(np.concatenate(lst) for lst in out)


def augment(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A noise-free defocused patch as another microscope might have recorded it (see the module doc)."""
    background = float(np.median(patch))
    scale = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    offset = float(rng.uniform(-0.5, 1.0)) * background
    gain = float(np.exp(rng.uniform(np.log(0.25), np.log(8.0))))
    noisy = poisson_noise(np.clip(patch * scale + offset, 0, None), rng, gain)
    noisy += rng.normal(0.0, rng.uniform(0.0, 3.0), noisy.shape).astype(np.float32)
    noisy = np.rot90(noisy, int(rng.integers(4)))
    return noisy[:, ::-1] if rng.random() < 0.5 else noisy


def synthetic_field(shape: tuple[int, int], seed: int, density: float = 4e-4, background: float = 120.0,
                    brightness: float = 600.0) -> np.ndarray:  # fmt: skip
    """A stand-in for a stained-nuclei field (tests, benchmarks): uint16 [H, W], bright ellipses with soft
    edges and some texture on a flat background, Poisson noise at gain 1."""
    rng = np.random.default_rng(seed)
    h, w = shape
    image = np.full(shape, background, np.float32)
    for _ in range(rng.poisson(density * h * w)):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(5, 11, 2)
        y0, y1, x0, x1 = (
            int(max(cy - ry - 2, 0)),
            int(min(cy + ry + 3, h)),
            int(max(cx - rx - 2, 0)),
            int(min(cx + rx + 3, w)),
        )
        yy, xx = np.mgrid[y0:y1, x0:x1]
        r = np.hypot((yy - cy) / ry, (xx - cx) / rx)
        texture = 1 + 0.3 * rng.standard_normal(r.shape)
        image[y0:y1, x0:x1] += brightness * rng.uniform(0.5, 1.5) * np.clip((1.2 - r) / 0.4, 0, 1) * texture
    return rng.poisson(np.clip(image, 0, None)).astype(np.uint16)
