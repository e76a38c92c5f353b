"""The DeepLab family on MobileNetV2 (Flax NNX): an FCN head, DeepLab-v3 (ASPP) and DeepLab-v3+ (ASPP + decoder).

    fcn      high-level features -> 3x3 conv (256) + BN + ReLU -> dropout -> 1x1 to classes -> upsample to the input
    v3       ASPP on the high-level features: a 1x1 branch, three 3x3 atrous branches (rates 6/12/18 at output
             stride 16, 12/24/36 at 8) and image-level pooling (global average -> 1x1 conv + BN + ReLU, broadcast),
             concatenated -> 1x1 projection (256) + BN + ReLU -> dropout -> 1x1 to classes -> upsample
    v3plus   v3's ASPP, upsampled to the stride-4 low-level features (projected 1x1 to 48 + BN + ReLU), concatenated,
             two 3x3 convs (256) -> 1x1 to classes -> upsample to the input (Chen et al. 2018)

`separable` makes the atrous branches and the decoder's convs depthwise-separable (depthwise 3x3 with dilation +
BN + ReLU, pointwise 1x1 + BN + ReLU), as DeepLab-v3+. Inputs are float32 [B, H, W, C] in [0, 1] with any H and
W: they are padded (edge pixels repeated, at the bottom and right) to a multiple of the output stride, so the
feature grids of both levels line up exactly, and the logits [B, H, W, classes] are cropped back.

`freeze_bn` (default): the backbone's batch norms keep the ImageNet running statistics in training mode too
(small batches on CPU would give noisy statistics); their scales and offsets still train. The heads normalise
with group norm, not batch norm: with batch norm, a v3+ trained on batches of 8 crops scored the pixels of
its training crops 93% right and a whole tune strip 6% right (the running statistics of the image-pooling
branch, a mean over each crop, did not fit a strip of another shape); group norm has no batch statistics, so
training and prediction compute the same function. Train/eval mode as for any NNX model: model.train() / model.eval().
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from deepflows.imaging.segment.mobilenet import (HIGH_LEVEL_CHANNELS, LOW_LEVEL_CHANNELS, ConvBN, MobileNetV2,
                                                 load_imagenet)  # fmt: skip

HEADS = ("fcn", "v3", "v3plus")
HEAD = {"activation": nnx.relu, "group_norm": True}  # the heads' conv + norm + activation (see the module doc)
ASPP_RATES = (6, 12, 18)  # at output stride 16; doubled at 8


def _resize(x, height: int, width: int):
    """Bilinear, half-pixel centres (torch's align_corners=False)."""
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), "bilinear")


class Conv3x3(nnx.Module):
    """A 3x3 conv + BN + ReLU, or its depthwise-separable form (depthwise 3x3 + BN + ReLU, pointwise + BN + ReLU)."""

    def __init__(self, cin: int, cout: int, dilation: int = 1, *, separable: bool, rngs: nnx.Rngs):
        if separable:
            self.depthwise = ConvBN(cin, cin, 3, dilation=dilation, groups=cin, **HEAD, rngs=rngs)
            self.pointwise = ConvBN(cin, cout, 1, **HEAD, rngs=rngs)
        else:
            self.depthwise = None
            self.pointwise = ConvBN(cin, cout, 3, dilation=dilation, **HEAD, rngs=rngs)

    def __call__(self, x):
        return self.pointwise(x if self.depthwise is None else self.depthwise(x))


class ASPP(nnx.Module):
    """Atrous spatial pyramid pooling: 1x1, three atrous 3x3 and image-pooling branches -> 1x1 projection."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...], dropout: float, *, separable: bool,
                 rngs: nnx.Rngs):  # fmt: skip
        self.point = ConvBN(cin, cout, 1, **HEAD, rngs=rngs)
        self.atrous = nnx.List([Conv3x3(cin, cout, r, separable=separable, rngs=rngs) for r in rates])
        self.pool = ConvBN(cin, cout, 1, **HEAD, rngs=rngs)
        self.project = ConvBN(cout * (2 + len(rates)), cout, 1, **HEAD, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x):
        pooled = self.pool(jnp.mean(x, axis=(1, 2), keepdims=True))
        pooled = jnp.broadcast_to(pooled, (*x.shape[:3], pooled.shape[-1]))
        branches = [self.point(x), *(a(x) for a in self.atrous), pooled]
        return self.dropout(self.project(jnp.concatenate(branches, axis=-1)))


class DeepLab(nnx.Module):
    """Semantic segmentation: float [B, H, W, channels] in [0, 1] -> logits [B, H, W, classes]."""

    def __init__(self, channels: int = 3, classes: int = 2, head: str = "v3plus", output_stride: int = 16,
                 aspp_channels: int = 256, low_level_channels: int = 48, decoder_channels: int = 256,
                 separable: bool = True, dropout: float = 0.1, freeze_bn: bool = True, *, rngs: nnx.Rngs):  # fmt: skip
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, not {output_stride}")
        if classes < 1:
            raise ValueError(f"classes must be at least 1, not {classes}")
        self.output_stride = output_stride
        self.backbone = MobileNetV2(channels, output_stride, top=False, freeze_bn=freeze_bn, rngs=rngs)
        fcn, v3plus = head == "fcn", head == "v3plus"
        rates = tuple(r * 16 // output_stride for r in ASPP_RATES)
        self.fcn = ConvBN(HIGH_LEVEL_CHANNELS, aspp_channels, 3, **HEAD, rngs=rngs) if fcn else None
        self.fcn_dropout = nnx.Dropout(dropout, rngs=rngs) if fcn else None
        self.aspp = None if fcn else ASPP(HIGH_LEVEL_CHANNELS, aspp_channels, rates, dropout, separable=separable,
                                          rngs=rngs)  # fmt: skip
        self.low_level = ConvBN(LOW_LEVEL_CHANNELS, low_level_channels, 1, **HEAD, rngs=rngs) \
            if v3plus else None  # fmt: skip
        decoder_in = (aspp_channels + low_level_channels, decoder_channels)
        self.decoder = nnx.List([Conv3x3(c, decoder_channels, separable=separable, rngs=rngs)
                                 for c in decoder_in]) if v3plus else None  # fmt: skip
        width = decoder_channels if v3plus else aspp_channels
        self.classifier = nnx.Conv(width, classes, (1, 1), rngs=rngs)

    def __call__(self, x):
        h, w, m = x.shape[1], x.shape[2], self.output_stride
        x = jnp.pad(x, ((0, 0), (0, -h % m), (0, -w % m), (0, 0)), mode="edge")
        low, high = self.backbone.features(x)
        y = self.fcn_dropout(self.fcn(high)) if self.fcn is not None else self.aspp(high)
        if self.decoder is not None:
            low = self.low_level(low)
            y = jnp.concatenate([_resize(y, *low.shape[1:3]), low], axis=-1)
            for conv in self.decoder:
                y = conv(y)
        return _resize(self.classifier(y), *x.shape[1:3])[:, :h, :w]


def load_imagenet_backbone(model: DeepLab) -> None:
    """Copy MobileNetV2's ImageNet weights into the backbone (the stem adapted to the model's channels), in place."""
    load_imagenet(model.backbone)
