"""Pileup classifiers (Flax NNX), selected by name from a config: inputs uint8 [B, H, W, C], outputs logits [B, 3].

Inputs are normalised inside the model as (x - 128) / 128, so every caller feeds the stored uint8
examples unchanged and training and calling cannot disagree on preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from flax import nnx

NUM_CLASSES = 3  # hom-ref, het, hom-alt


def normalise(x: jnp.ndarray) -> jnp.ndarray:
    return (x.astype(jnp.float32) - 128.0) / 128.0


class ConvBlock(nnx.Module):
    """conv 3x3 -> batch norm -> relu, twice, then 2x2 max pool."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(in_features, out_features, (3, 3), use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(out_features, rngs=rngs)
        self.conv2 = nnx.Conv(out_features, out_features, (3, 3), use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(out_features, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.relu(self.bn2(self.conv2(x)))
        return nnx.max_pool(x, (2, 2), strides=(2, 2))


class SmallCNN(nnx.Module):
    """The default, CPU-friendly model: a few conv blocks, global average pooling, dropout, dense."""

    def __init__(self, channels: int = 7, widths: tuple[int, ...] = (32, 64, 128), dropout: float = 0.2, *,
                 rngs: nnx.Rngs):  # fmt: skip
        features = (channels, *widths)
        self.blocks = nnx.List([ConvBlock(a, b, rngs=rngs) for a, b in zip(features[:-1], features[1:])])
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(widths[-1], NUM_CLASSES, rngs=rngs)

    def __call__(self, x):
        x = normalise(x)
        for block in self.blocks:
            x = block(x)
        x = jnp.mean(x, axis=(1, 2))
        return self.head(self.dropout(x))


ARCHITECTURES: dict[str, Callable[..., nnx.Module]] = {"small_cnn": SmallCNN}


def build_model(architecture: str, options: dict, channels: int, seed: int) -> nnx.Module:
    """A freshly initialised model; `options` are the architecture's keyword arguments from the config."""
    if architecture not in ARCHITECTURES:
        from deepflows.errors import UserError

        raise UserError(f"unknown model architecture '{architecture}' (known: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[architecture](channels=channels, **options, rngs=nnx.Rngs(seed))
