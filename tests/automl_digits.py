"""Tiny MNIST-format digits for the automl tests: 400 rows whose classes are separable (class k lights up row
block k), so a child that learns anything learns them in a few dozen steps."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np


def write_separable_digits(path: Path, rows: int = 400) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(rows):
        label = i % 10
        image = rng.integers(0, 60, (28, 28))
        image[2 * label + 4 : 2 * label + 7, 4:24] = 255
        lines.append(",".join(map(str, [*image.ravel(), label])))
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    return path
