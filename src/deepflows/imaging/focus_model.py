"""The focus-quality classifier of Yang et al. (2018) and what turns its outputs into ratings.

An 84 x 84 patch -> conv 32 (5x5) -> max-pool -> conv 64 (5x5) -> max-pool -> dense 1024 -> dropout ->
11 logits, one per defocus level. Each patch is standardised inside the model (minus its mean, over its
standard deviation), so brightness, contrast and background offset do not matter and training and scoring
cannot disagree on preprocessing. A blank patch is then noise that looks the same at every level, which
the training data teach the model to answer with a flat distribution: low certainty.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from deepflows.imaging.defocus import LEVELS

PATCH = 84


def standardise(x: jnp.ndarray) -> jnp.ndarray:
    """Per patch: zero mean, unit standard deviation; a constant patch becomes all zeros."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    std = jnp.std(x, axis=(1, 2, 3), keepdims=True)
    return (x - mean) / jnp.maximum(std, 1e-6)


class FocusNet(nnx.Module):
    """Inputs [B, 84, 84, channels] in any intensity units; outputs logits [B, levels]."""

    def __init__(self, channels: int = 1, patch: int = PATCH, widths: tuple[int, int] = (32, 64), kernel: int = 5,
                 hidden: int = 1024, dropout: float = 0.5, levels: int = LEVELS, *, rngs: nnx.Rngs):  # fmt: skip
        if patch % 4:
            raise ValueError("patch must be a multiple of 4 (two 2x2 poolings)")
        self.conv1 = nnx.Conv(channels, widths[0], (kernel, kernel), rngs=rngs)
        self.conv2 = nnx.Conv(widths[0], widths[1], (kernel, kernel), rngs=rngs)
        self.dense = nnx.Linear((patch // 4) ** 2 * widths[1], hidden, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(hidden, levels, rngs=rngs)

    def __call__(self, x):
        x = standardise(x)
        x = nnx.max_pool(nnx.relu(self.conv1(x)), (2, 2), strides=(2, 2))
        x = nnx.max_pool(nnx.relu(self.conv2(x)), (2, 2), strides=(2, 2))
        x = nnx.relu(self.dense(x.reshape(x.shape[0], -1)))
        return self.head(self.dropout(x))


def certainty(probs: np.ndarray) -> np.ndarray:
    """1 - entropy / log(levels) over the last axis: 1 for a one-hot prediction, 0 for a flat one."""
    p = np.clip(probs, 1e-12, 1.0)
    return 1.0 - (-(p * np.log(p)).sum(axis=-1)) / np.log(probs.shape[-1])


def aggregate(probs: np.ndarray, weights: np.ndarray | None = None) -> dict:
    """One rating for a set of patch predictions [N, levels]: their distributions averaged with the patches'
    certainties as weights (an empty patch barely counts), then level = argmax, expected level, certainty.
    None when no patch carries any weight (e.g. an all-black image)."""
    weights = certainty(probs) if weights is None else weights
    total = float(np.sum(weights))
    if len(probs) == 0 or total <= 1e-6:
        return None
    mean = (probs * weights[:, None]).sum(axis=0) / total
    return {"level": int(np.argmax(mean)), "expected_level": float(mean @ np.arange(len(mean))),
            "certainty": float(certainty(mean)), "probs": mean}  # fmt: skip


def to_patches(plane: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """[H, W] -> [rows, cols, patch, patch]: the non-overlapping patches from the top-left corner (a
    remainder narrower than a patch at the bottom and right edges is not scored)."""
    rows, cols = plane.shape[0] // patch, plane.shape[1] // patch
    return plane[: rows * patch, : cols * patch].reshape(rows, patch, cols, patch).swapaxes(1, 2)


@functools.partial(jax.jit, static_argnums=0)
def _probabilities(graphdef, state, x):
    return jax.nn.softmax(nnx.merge(graphdef, state)(x[..., None]), axis=-1)


class Scorer:
    """A model (in eval mode) as a jitted function: patches [N, p, p] -> probabilities [N, levels] (NumPy),
    in fixed batches so that one compilation serves every call and every Scorer of the same architecture
    (the last batch is zero-padded). Thread-safe, so Dask's threads can share one."""

    def __init__(self, model, batch_size: int = 256):
        self.graphdef, self.state = nnx.split(model)
        self.batch_size, self.levels = int(batch_size), model.head.out_features

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        n, b = len(patches), self.batch_size
        out = np.empty((n, self.levels), np.float32)
        for start in range(0, n, b):
            chunk = patches[start : start + b].astype(np.float32)
            if len(chunk) < b:
                chunk = np.concatenate([chunk, np.zeros((b - len(chunk), *chunk.shape[1:]), np.float32)])
            out[start : start + b] = np.asarray(_probabilities(self.graphdef, self.state, chunk))[: min(b, n - start)]
        return out
