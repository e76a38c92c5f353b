"""Real MNIST digits (../shared/data/automl/mnist_5k.csv.gz: 5,000 digits, 500 per class) and a small ConvNet:
the child task of the optimizer search, and one of the transfer tasks.

Splits, fixed by a permutation drawn from seed 0 (stratified: each split holds every class in proportion):
    train       4,000 digits: what searched rules train on
    validation  1,000 digits: the search's reward (the accuracy on them)
    fit / tune  the 4,000 train digits as 3,500 / 500: the transfer benchmark trains on `fit`, picks learning
                rates on `tune` and reports `validation`, where a searched rule was chosen (say so beside it)
"""

from __future__ import annotations

import gzip
from functools import cached_property
from pathlib import Path

import numpy as np

from deepflows.automl.tasks.classify import ImageClassification
from deepflows.errors import UserError

SPLITS = ("train", "validation", "fit", "tune")


def read_digits(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The CSV's images as float32 (N, 28, 28, 1) in [0, 1] and labels as int32 (N,)."""
    path = Path(path)
    try:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.float32, ndmin=2)
    except (OSError, ValueError, EOFError) as error:
        raise UserError(f"{path}: not a gzip CSV of MNIST digits (784 pixels + label per row): {error}") from None
    if table.shape[1] != 785 or not len(table):
        raise UserError(f"{path}: expected rows of 785 numbers (784 pixels + label), found {table.shape[1]}")
    labels = table[:, -1]
    if np.any((labels < 0) | (labels > 9) | (labels != np.round(labels))):
        raise UserError(f"{path}: labels must be the digits 0-9")
    return (table[:, :-1] / 255.0).reshape(-1, 28, 28, 1), labels.astype(np.int32)


def split_indices(labels: np.ndarray, fractions: dict[str, float], seed: int = 0) -> dict[str, np.ndarray]:
    """Stratified split of row indices: per class, a seeded permutation cut in the given fractions."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in fractions}
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        edges = np.round(np.cumsum([0, *fractions.values()]) * len(rows)).astype(int)
        for name, lo, hi in zip(fractions, edges[:-1], edges[1:]):
            parts[name].append(rows[lo:hi])
    return {name: np.sort(np.concatenate(rows)) for name, rows in parts.items()}


class ConvNet:
    """Two strided 3x3 convolutions (8 and 16 channels, ReLU) and a linear read-out: ~17k parameters."""

    def __new__(cls, rngs, width: int = 8):
        from flax import nnx

        class _ConvNet(nnx.Module):
            def __init__(self, rngs):
                self.conv1 = nnx.Conv(1, width, (3, 3), strides=2, rngs=rngs)
                self.conv2 = nnx.Conv(width, 2 * width, (3, 3), strides=2, rngs=rngs)
                self.out = nnx.Linear(7 * 7 * 2 * width, 10, rngs=rngs)

            def __call__(self, x):
                x = nnx.relu(self.conv1(x))
                x = nnx.relu(self.conv2(x))
                return self.out(x.reshape(x.shape[0], -1))

        return _ConvNet(rngs)


class MnistTask(ImageClassification):
    """The ConvNet on MNIST digits: train on `train_split`, evaluate accuracy on the other splits."""

    name = "mnist_convnet"

    def __init__(self, path: str | Path, *, train_split: str = "train", batch_size: int = 32, width: int = 8):
        if train_split not in SPLITS:
            raise ValueError(f"train_split {train_split!r}: one of {SPLITS}")
        images, labels = read_digits(path)
        outer = split_indices(labels, {"train": 0.8, "validation": 0.2})
        inner = split_indices(labels[outer["train"]], {"fit": 0.875, "tune": 0.125})
        rows = {**outer, **{name: outer["train"][idx] for name, idx in inner.items()}}
        self._keep(images, labels, rows)
        self.train_split, self.batch_size, self.width = train_split, batch_size, width

    def model(self, rngs):
        return ConvNet(rngs, self.width)
