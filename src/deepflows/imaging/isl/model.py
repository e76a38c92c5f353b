"""The In Silico Labeling networks (Flax NNX): normalised z-stack patches [B, H, W, planes] in, per-pixel
predictions of every label out.

`ISLNet`, after Christiansen et al. (2018): a "fovea" of towers, one per scale (1x, 2x, 4x, 8x, ...). Each
tower looks at the whole stack through a learned down-scale (a strided convolution, the planes as channels),
refines it with Inception-like blocks in its own scale (parallel 1x1, 3x3 and dilated 3x3 branches, joined,
projected, added back), and returns to full resolution through a learned up-scale (a transposed
convolution). The towers are joined and fused (two layers: per pixel, or with `fuse_kernel: 3` over each
pixel's neighbours too), and a head gives, for every pixel and label, logits over BINS intensity bins: a
distribution, so that the model can say where it is unsure. Coarse towers see
far (the 8x tower's blocks span ~40 pixels) at little cost; the 1x tower keeps the detail. With `frozen`, the
towers and the fusion pass no gradient: transfer learning trains the head (two 1x1 layers) alone.

`UNet`: the small U-Net of the issue's baseline, trained with an L2 loss; one value per pixel and label.

H and W must be multiples of the coarsest scale (`multiple`); prediction pads tiles to fit. `crop` (in
pixels) drops a border of the towers' features before they are fused: training scores only a patch's centre, where every
pixel has the context it has at prediction time, and the head (BINS outputs per label) is the most costly
layer per pixel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from deepflows.imaging.isl import BINS


def _crop(x, crop: int):
    return x[:, crop:x.shape[1] - crop, crop:x.shape[2] - crop] if crop else x


class InceptionBlock(nnx.Module):
    """x + project(relu(norm([1x1 | 3x3 | dilated 3x3](x)))), then relu."""

    def __init__(self, width: int, *, rngs: nnx.Rngs):
        half, quarter = width // 2, width // 4
        self.b1 = nnx.Conv(width, half, (1, 1), rngs=rngs)
        self.b3 = nnx.Conv(width, quarter, (3, 3), rngs=rngs)
        self.d3 = nnx.Conv(width, width - half - quarter, (3, 3), kernel_dilation=2, rngs=rngs)
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.project = nnx.Conv(width, width, (1, 1), rngs=rngs)

    def __call__(self, x):
        y = jnp.concatenate([self.b1(x), self.b3(x), self.d3(x)], axis=-1)
        return nnx.relu(x + self.project(nnx.relu(self.norm(y))))


class Tower(nnx.Module):
    """Learned down-scale by `scale`, `blocks` Inception-like blocks at that scale, learned up-scale."""

    def __init__(self, channels: int, width: int, scale: int, blocks: int, *, rngs: nnx.Rngs):
        self.scale = scale
        window = (3, 3) if scale == 1 else (scale, scale)
        self.down = nnx.Conv(channels, width, window, strides=scale, padding="SAME" if scale == 1 else "VALID",
                             rngs=rngs)  # fmt: skip
        self.blocks = nnx.List([InceptionBlock(width, rngs=rngs) for _ in range(blocks)])
        # a transposed convolution whose kernel equals its stride, written as a per-pixel dense layer and a
        # depth-to-space: the same function, and XLA's CPU backend differentiates it ten times faster
        self.up = nnx.Linear(width, scale * scale * width, rngs=rngs) if scale > 1 else None

    def __call__(self, x):
        x = nnx.relu(self.down(x))
        for block in self.blocks:
            x = block(x)
        if self.up is None:
            return x
        b, h, w, c = x.shape
        s = self.scale
        x = self.up(x).reshape(b, h, w, s, s, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h * s, w * s, c)
        return nnx.relu(x)


class ISLNet(nnx.Module):
    """[B, H, W, planes] -> logits [B, H - 2 crop, W - 2 crop, labels, bins]."""

    distribution = True

    def __init__(self, channels: int = 13, labels: int = 3, bins: int = BINS, scales: tuple[int, ...] = (1, 2, 4, 8),
                 widths: tuple[int, ...] = (16, 32, 48, 64), blocks: int | tuple[int, ...] = 2, fuse: int = 64,
                 head: int = 24, fuse_kernel: int = 1, frozen: bool = False, *, rngs: nnx.Rngs):  # fmt: skip
        if len(scales) != len(widths) or not scales:
            raise ValueError("scales and widths must be lists of the same length")
        if any(s < 1 or s & (s - 1) for s in scales):
            raise ValueError("scales must be powers of two")
        # one count for every tower, or one per tower (depth is cheap where the tower is coarse)
        blocks = [int(blocks)] * len(scales) if isinstance(blocks, int) else [int(b) for b in blocks]
        if len(blocks) != len(scales) or min(blocks) < 0:
            raise ValueError("blocks must be a count, or one count per scale")
        self.labels, self.bins, self.multiple = int(labels), int(bins), int(max(scales))
        self.frozen = bool(frozen)
        self.towers = nnx.List([Tower(channels, w, s, n, rngs=rngs) for s, w, n in zip(scales, widths, blocks)])
        if fuse_kernel < 1 or fuse_kernel % 2 == 0:
            raise ValueError("fuse_kernel must be an odd number >= 1")
        # 1: the towers meet per pixel; 3: the fusion also mixes neighbours, joining the coarse towers'
        # up-scaled cells with the 1x tower's detail across pixels, as a U-Net's decoder does
        k, self.fuse_reach = (fuse_kernel, fuse_kernel), fuse_kernel - 1  # two layers, each reaching k // 2
        self.fuse1 = nnx.Conv(sum(widths), fuse, k, padding="VALID", rngs=rngs)
        self.fuse2 = nnx.Conv(fuse, fuse, k, padding="VALID", rngs=rngs)
        self.hidden = nnx.Conv(fuse, head, (1, 1), rngs=rngs)
        self.head = nnx.Conv(head, self.labels * self.bins, (1, 1), rngs=rngs)

    def __call__(self, x, crop: int = 0):
        return self.logits(self.features(x, crop))

    def features(self, x, crop: int = 0):
        """[B, H, W, planes] -> the head's input per pixel [B, H - 2 crop, W - 2 crop, head]."""
        x = x.astype(jnp.float32)
        x = jnp.concatenate([tower(x) for tower in self.towers], axis=-1)
        # the fusion's reach comes out of the crop; what the crop cannot give is mirrored, as at an image edge
        reach = self.fuse_reach
        x = _crop(x, max(crop - reach, 0))
        if crop < reach:
            pad = reach - crop
            x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        x = nnx.relu(self.fuse2(nnx.relu(self.fuse1(x))))
        if self.frozen:  # transfer learning: the towers and the fusion stay as trained; the head learns
            x = jax.lax.stop_gradient(x)
        return nnx.relu(self.hidden(x))

    def logits(self, features):
        """Per-pixel features [..., head] -> logits [..., labels, bins] (prediction applies it a few rows at a
        time: a tile's logits are its pixels x labels x 256 floats)."""
        logits = self.head(features)
        return logits.reshape(*logits.shape[:-1], self.labels, self.bins)


class UNet(nnx.Module):
    """[B, H, W, planes] -> [B, H - 2 crop, W - 2 crop, labels]: two 3x3 conv-relu per level, max-pool down,
    transposed convolution up with the skip joined."""

    distribution = False

    def __init__(self, channels: int = 13, labels: int = 3, widths: tuple[int, ...] = (16, 32, 64), *,
                 rngs: nnx.Rngs):  # fmt: skip
        self.labels, self.multiple = int(labels), 2 ** (len(widths) - 1)
        ins = [channels, *widths[:-1]]
        self.down = nnx.List([self._pair(a, b, rngs) for a, b in zip(ins, widths)])
        self.up = nnx.List([nnx.ConvTranspose(b, a, (2, 2), strides=(2, 2), rngs=rngs)
                            for a, b in zip(widths[:-1], widths[1:])])  # fmt: skip
        self.merge = nnx.List([self._pair(2 * a, a, rngs) for a in widths[:-1]])
        self.out = nnx.Conv(widths[0], self.labels, (1, 1), rngs=rngs)

    @staticmethod
    def _pair(a: int, b: int, rngs):
        return nnx.List([nnx.Conv(a, b, (3, 3), rngs=rngs), nnx.Conv(b, b, (3, 3), rngs=rngs)])

    def __call__(self, x, crop: int = 0):
        x = x.astype(jnp.float32)
        skips = []
        for i, pair in enumerate(self.down):
            if i:
                x = nnx.max_pool(x, (2, 2), strides=(2, 2))
            for conv in pair:
                x = nnx.relu(conv(x))
            skips.append(x)
        for up, pair, skip in zip(reversed(self.up), reversed(self.merge), reversed(skips[:-1])):
            x = jnp.concatenate([nnx.relu(up(x)), skip], axis=-1)
            for conv in pair:
                x = nnx.relu(conv(x))
        return self.out(_crop(x, crop))
