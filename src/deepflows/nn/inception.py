"""InceptionV3 for pileup images (Flax NNX): DeepVariant's classifier.

DeepVariant (v1.x, `keras_modeling.inceptionv3`) uses the Keras InceptionV3 backbone without its top,
global average pooling, dropout 0.2 and a 3-way dense layer, on [100, 221, C] pileups. This is the same
network:

    stem      conv 3x3/2 valid (32), conv 3x3 valid (32), conv 3x3 same (64), max pool 3x3/2,
              conv 1x1 (80), conv 3x3 valid (192), max pool 3x3/2
    mixed_5*  Inception-A x3 (pool features 32, 64, 64)                     -> 256, 288, 288
    mixed_6a  reduction (3x3/2 valid)                                         -> 768
    mixed_6*  Inception-C x4 with factorised 7x7 (c7 = 128, 160, 160, 192)   -> 768
    mixed_7a  reduction (3x3/2 valid)                                         -> 1280
    mixed_7*  Inception-E x2 (expanded 1x3 / 3x1 branches)                    -> 2048
    head      global average pool, dropout, dense 3

Every conv is conv (no bias) -> batch norm (no scale, epsilon 1e-3) -> relu, as in Keras; average pools
inside the blocks are 3x3/1 'same' and do not count the padding (as TensorFlow's).

Input size: the VALID stride-2 reductions take 100 x 221 to 10 x 25 after the stem, 4 x 12 after
mixed_6a and 1 x 5 after mixed_7a, so DeepVariant's pileups pass without padding. Anything smaller
than 75 x 75 (the Keras minimum, e.g. a test's toy images) is zero-padded (symmetrically, in the
normalised space, i.e. with the value 128 of the stored uint8) up to 75 in that dimension.

Options: `width_multiplier` scales every channel count (slim's depth_multiplier; at least 1 channel
per conv) and `depth` is the number of Inception-A, -C and -E blocks (default [3, 4, 2]), so tests
can build a tiny network, e.g. width_multiplier 0.0625 and depth [1, 1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx

from deepflows.nn.models import NUM_CLASSES, normalise

MIN_SIZE = 75  # the smallest input the stem and two reductions accept (as Keras's InceptionV3)


class ConvBN(nnx.Module):
    """conv (no bias) -> batch norm (no scale) -> relu."""

    def __init__(self, in_features: int, out_features: int, kernel: tuple[int, int], *, strides: int = 1,
                 padding: str = "SAME", rngs: nnx.Rngs):  # fmt: skip
        self.conv = nnx.Conv(in_features, out_features, kernel, strides=strides, padding=padding,
                             use_bias=False, rngs=rngs)  # fmt: skip
        self.bn = nnx.BatchNorm(out_features, use_scale=False, epsilon=1e-3, momentum=0.99, rngs=rngs)
        self.out_features = out_features

    def __call__(self, x):
        return nnx.relu(self.bn(self.conv(x)))


def _avg_pool_same(x):
    return nnx.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME", count_include_pad=False)


def _max_pool_valid(x):
    return nnx.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nnx.Module):
    """mixed_5b/c/d: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool -> 1x1."""

    def __init__(self, cin: int, pool_features: int, d, *, rngs: nnx.Rngs):
        self.b1 = ConvBN(cin, d(64), (1, 1), rngs=rngs)
        self.b5_1 = ConvBN(cin, d(48), (1, 1), rngs=rngs)
        self.b5_2 = ConvBN(d(48), d(64), (5, 5), rngs=rngs)
        self.b3_1 = ConvBN(cin, d(64), (1, 1), rngs=rngs)
        self.b3_2 = ConvBN(d(64), d(96), (3, 3), rngs=rngs)
        self.b3_3 = ConvBN(d(96), d(96), (3, 3), rngs=rngs)
        self.bp = ConvBN(cin, d(pool_features), (1, 1), rngs=rngs)
        self.out_features = d(64) + d(64) + d(96) + d(pool_features)

    def __call__(self, x):
        return jnp.concatenate([
            self.b1(x),
            self.b5_2(self.b5_1(x)),
            self.b3_3(self.b3_2(self.b3_1(x))),
            self.bp(_avg_pool_same(x)),
        ], axis=-1)  # fmt: skip


class ReductionB(nnx.Module):
    """mixed_6a: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max pool 3x3/2 (all VALID)."""

    def __init__(self, cin: int, d, *, rngs: nnx.Rngs):
        self.b3 = ConvBN(cin, d(384), (3, 3), strides=2, padding="VALID", rngs=rngs)
        self.bd_1 = ConvBN(cin, d(64), (1, 1), rngs=rngs)
        self.bd_2 = ConvBN(d(64), d(96), (3, 3), rngs=rngs)
        self.bd_3 = ConvBN(d(96), d(96), (3, 3), strides=2, padding="VALID", rngs=rngs)
        self.out_features = d(384) + d(96) + cin

    def __call__(self, x):
        return jnp.concatenate([self.b3(x), self.bd_3(self.bd_2(self.bd_1(x))), _max_pool_valid(x)], axis=-1)


class InceptionC(nnx.Module):
    """mixed_6b..e: 1x1 | 1x1 -> 1x7 -> 7x1 | 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7 | avg pool -> 1x1."""

    def __init__(self, cin: int, c7: int, d, *, rngs: nnx.Rngs):
        c7 = d(c7)
        self.b1 = ConvBN(cin, d(192), (1, 1), rngs=rngs)
        self.b7_1 = ConvBN(cin, c7, (1, 1), rngs=rngs)
        self.b7_2 = ConvBN(c7, c7, (1, 7), rngs=rngs)
        self.b7_3 = ConvBN(c7, d(192), (7, 1), rngs=rngs)
        self.bd_1 = ConvBN(cin, c7, (1, 1), rngs=rngs)
        self.bd_2 = ConvBN(c7, c7, (7, 1), rngs=rngs)
        self.bd_3 = ConvBN(c7, c7, (1, 7), rngs=rngs)
        self.bd_4 = ConvBN(c7, c7, (7, 1), rngs=rngs)
        self.bd_5 = ConvBN(c7, d(192), (1, 7), rngs=rngs)
        self.bp = ConvBN(cin, d(192), (1, 1), rngs=rngs)
        self.out_features = 4 * d(192)

    def __call__(self, x):
        b7 = self.b7_3(self.b7_2(self.b7_1(x)))
        bd = self.bd_5(self.bd_4(self.bd_3(self.bd_2(self.bd_1(x)))))
        return jnp.concatenate([self.b1(x), b7, bd, self.bp(_avg_pool_same(x))], axis=-1)


class ReductionD(nnx.Module):
    """mixed_7a: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max pool 3x3/2 (reductions VALID)."""

    def __init__(self, cin: int, d, *, rngs: nnx.Rngs):
        self.b3_1 = ConvBN(cin, d(192), (1, 1), rngs=rngs)
        self.b3_2 = ConvBN(d(192), d(320), (3, 3), strides=2, padding="VALID", rngs=rngs)
        self.b7_1 = ConvBN(cin, d(192), (1, 1), rngs=rngs)
        self.b7_2 = ConvBN(d(192), d(192), (1, 7), rngs=rngs)
        self.b7_3 = ConvBN(d(192), d(192), (7, 1), rngs=rngs)
        self.b7_4 = ConvBN(d(192), d(192), (3, 3), strides=2, padding="VALID", rngs=rngs)
        self.out_features = d(320) + d(192) + cin

    def __call__(self, x):
        b3 = self.b3_2(self.b3_1(x))
        b7 = self.b7_4(self.b7_3(self.b7_2(self.b7_1(x))))
        return jnp.concatenate([b3, b7, _max_pool_valid(x)], axis=-1)


class InceptionE(nnx.Module):
    """mixed_7b/c: 1x1 | 1x1 -> (1x3, 3x1) | 1x1 -> 3x3 -> (1x3, 3x1) | avg pool -> 1x1."""

    def __init__(self, cin: int, d, *, rngs: nnx.Rngs):
        self.b1 = ConvBN(cin, d(320), (1, 1), rngs=rngs)
        self.b3_1 = ConvBN(cin, d(384), (1, 1), rngs=rngs)
        self.b3_2a = ConvBN(d(384), d(384), (1, 3), rngs=rngs)
        self.b3_2b = ConvBN(d(384), d(384), (3, 1), rngs=rngs)
        self.bd_1 = ConvBN(cin, d(448), (1, 1), rngs=rngs)
        self.bd_2 = ConvBN(d(448), d(384), (3, 3), rngs=rngs)
        self.bd_3a = ConvBN(d(384), d(384), (1, 3), rngs=rngs)
        self.bd_3b = ConvBN(d(384), d(384), (3, 1), rngs=rngs)
        self.bp = ConvBN(cin, d(192), (1, 1), rngs=rngs)
        self.out_features = d(320) + 4 * d(384) + d(192)

    def __call__(self, x):
        b3 = self.b3_1(x)
        bd = self.bd_2(self.bd_1(x))
        return jnp.concatenate([
            self.b1(x),
            self.b3_2a(b3), self.b3_2b(b3),
            self.bd_3a(bd), self.bd_3b(bd),
            self.bp(_avg_pool_same(x)),
        ], axis=-1)  # fmt: skip


class InceptionV3(nnx.Module):
    """DeepVariant's InceptionV3 classifier: uint8 [B, H, W, C] -> logits [B, 3]."""

    def __init__(self, channels: int = 8, width_multiplier: float = 1.0, depth: Sequence[int] = (3, 4, 2),
                 dropout: float = 0.2, *, rngs: nnx.Rngs):  # fmt: skip
        from deepflows.errors import UserError

        if not width_multiplier > 0:
            raise UserError(f"inception_v3: width_multiplier must be positive, got {width_multiplier}")
        if len(depth) != 3 or any(int(n) < 1 for n in depth):
            raise UserError(f"inception_v3: depth must be three block counts >= 1 (A, C, E), got {list(depth)}")

        def d(n: int) -> int:
            return max(1, int(n * width_multiplier))

        self.stem = nnx.List([
            ConvBN(channels, d(32), (3, 3), strides=2, padding="VALID", rngs=rngs),
            ConvBN(d(32), d(32), (3, 3), padding="VALID", rngs=rngs),
            ConvBN(d(32), d(64), (3, 3), padding="SAME", rngs=rngs),
            ConvBN(d(64), d(80), (1, 1), padding="VALID", rngs=rngs),
            ConvBN(d(80), d(192), (3, 3), padding="VALID", rngs=rngs),
        ])  # fmt: skip
        blocks = []
        cin = d(192)
        for i in range(int(depth[0])):
            blocks.append(InceptionA(cin, 32 if i == 0 else 64, d, rngs=rngs))
            cin = blocks[-1].out_features
        blocks.append(ReductionB(cin, d, rngs=rngs))
        cin = blocks[-1].out_features
        c7s = (128, 160, 160, 192)
        for i in range(int(depth[1])):
            # The first block narrows to 128, the last widens to 192; 160 in between (4 blocks: 128 160 160 192).
            c7 = c7s[0] if i == 0 else (c7s[-1] if i == int(depth[1]) - 1 else 160)
            blocks.append(InceptionC(cin, c7, d, rngs=rngs))
            cin = blocks[-1].out_features
        blocks.append(ReductionD(cin, d, rngs=rngs))
        cin = blocks[-1].out_features
        for _ in range(int(depth[2])):
            blocks.append(InceptionE(cin, d, rngs=rngs))
            cin = blocks[-1].out_features
        self.blocks = nnx.List(blocks)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(cin, NUM_CLASSES, rngs=rngs)
        self.features = cin

    def __call__(self, x):
        x = normalise(x)
        pad_h, pad_w = max(0, MIN_SIZE - x.shape[1]), max(0, MIN_SIZE - x.shape[2])
        if pad_h or pad_w:
            x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
        s = self.stem
        x = s[2](s[1](s[0](x)))
        x = _max_pool_valid(x)
        x = s[4](s[3](x))
        x = _max_pool_valid(x)
        for block in self.blocks:
            x = block(x)
        x = jnp.mean(x, axis=(1, 2))
        return self.head(self.dropout(x))
