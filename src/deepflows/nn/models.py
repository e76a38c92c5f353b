"""Pileup classifiers (Flax NNX), selected by name from a config: inputs uint8 [B, H, W, C], outputs logits [B, 3].

Inputs are normalised inside the model as (x - 128) / 128, so every caller feeds the stored uint8
examples unchanged and training and calling cannot disagree on preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

NUM_CLASSES = 3  # hom-ref, het, hom-alt


def normalise(x: jnp.ndarray) -> jnp.ndarray:
    return (x.astype(jnp.float32) - 128.0) / 128.0


def space_to_depth(x: jnp.ndarray, rows: int, cols: int) -> jnp.ndarray:
    """[B, H, W, C] -> [B, H/rows, W/cols, rows*cols*C]: each rows x cols patch becomes one feature vector.
    H and W are zero-padded up to multiples, at the bottom and right edge, away from the candidate."""
    b, h, w, c = x.shape
    h2, w2 = -(-h // rows) * rows, -(-w // cols) * cols
    x = jnp.pad(x, ((0, 0), (0, h2 - h), (0, w2 - w), (0, 0)))
    x = x.reshape(b, h2 // rows, rows, w2 // cols, cols, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h2 // rows, w2 // cols, rows * cols * c)


def centre_columns(x: jnp.ndarray, n: int) -> jnp.ndarray:
    """The n middle columns of [B, W, C] (zero-padded on both sides when W < n)."""
    w = x.shape[1]
    if w < n:
        left = (n - w) // 2
        return jnp.pad(x, ((0, 0), (left, n - w - left), (0, 0)))
    start = (w - n) // 2
    return x[:, start:start + n]


class SmallCNN(nnx.Module):
    """The default, CPU-friendly pileup classifier.

    A patch stem (each `patch` rows x columns block of pixels through one dense layer, layer norm, relu:
    a strided convolution written as a matrix product, which XLA's CPU backend differentiates far faster
    than a convolution over the full 100 x 221 image), then 3x3 conv-norm-relu layers (the first with
    stride 2), then the mean over reads (rows) and the `centre` feature columns around the candidate
    flattened into a dense layer: the pileup's meaning depends on where a column sits relative to the
    candidate, which global pooling would throw away. Layer norm (over channels, per pixel) rather than
    batch norm: no running statistics, so training and calling compute exactly the same function (batch
    norm's running averages lagged the weights enough to cost 20% tune accuracy in a 3,000-step run).
    """

    def __init__(self, channels: int = 8, patch: tuple[int, int] = (4, 4), widths: tuple[int, ...] = (48, 64, 64),
                 centre: int = 16, hidden: int = 128, dropout: float = 0.2, *, rngs: nnx.Rngs):  # fmt: skip
        self.patch = tuple(int(v) for v in patch)
        if len(self.patch) != 2 or min(self.patch) < 1 or len(widths) < 1:
            raise ValueError("patch must be [rows, columns] >= 1 and widths at least one number")
        rows, cols = self.patch
        self.stem = nnx.Linear(rows * cols * channels, widths[0], use_bias=False, rngs=rngs)
        self.stem_norm = nnx.LayerNorm(widths[0], rngs=rngs)
        self.convs = nnx.List([nnx.Conv(a, b, (3, 3), strides=2 if i == 0 else 1, use_bias=False, rngs=rngs)
                               for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))])  # fmt: skip
        self.norms = nnx.List([nnx.LayerNorm(b, rngs=rngs) for b in widths[1:]])
        self.centre = int(centre)
        self.dense = nnx.Linear(self.centre * widths[-1], hidden, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(hidden, NUM_CLASSES, rngs=rngs)

    def __call__(self, x):
        x = space_to_depth(normalise(x), *self.patch)
        x = nnx.relu(self.stem_norm(self.stem(x)))
        for conv, norm in zip(self.convs, self.norms):
            x = nnx.relu(norm(conv(x)))
        x = centre_columns(jnp.mean(x, axis=1), self.centre)
        x = nnx.relu(self.dense(x.reshape(x.shape[0], -1)))
        return self.head(self.dropout(x))


class _Lazy:
    """An architecture defined in another module, imported only when built (keeps `models` light)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def resolve(self) -> type:
        import importlib

        return getattr(importlib.import_module(self.module), self.name)

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)


ARCHITECTURES: dict[str, Callable[..., nnx.Module]] = {
    "small_cnn": SmallCNN,
    "read_set": _Lazy("deepflows.nn.read_set", "ReadSetNet"),  # read by read, pooled as a set
    "inception_v3": _Lazy("deepflows.nn.inception", "InceptionV3"),  # DeepVariant's classifier
    "focus_cnn": _Lazy("deepflows.imaging.focus_model", "FocusNet"),  # microscope focus quality (Yang 2018)
    "isl_fovea": _Lazy("deepflows.imaging.isl.model", "ISLNet"),  # In Silico Labeling (Christiansen 2018)
    "isl_unet": _Lazy("deepflows.imaging.isl.model", "UNet"),  # its L2 baseline
    "mobilenet_v2": _Lazy("deepflows.imaging.segment.mobilenet", "MobileNetV2"),  # ImageNet classifier, backbone
    "deeplab": _Lazy("deepflows.imaging.segment.deeplab", "DeepLab"),  # segmentation: FCN, DeepLab-v3, v3+
    "sentence_bert": _Lazy("deepflows.text.encoder.bert", "SentenceBert"),  # all-MiniLM-L6-v2's BERT (sentence encoder)
}


ZERO_INIT = "zero_init"  # weights named so start at zero: an input added to a trained model starts silent


def _architecture_class(architecture: str) -> type:
    target = ARCHITECTURES[architecture]
    return target.resolve() if isinstance(target, _Lazy) else target


def architecture_options(architecture: str) -> dict:
    """The options an architecture takes (keyword -> default), without `channels` and `rngs`."""
    import inspect

    target = _architecture_class(architecture)
    return {name: p.default for name, p in inspect.signature(target.__init__).parameters.items()
            if name not in ("channels", "rngs", "self") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}  # fmt: skip


def added_inputs(architecture: str) -> tuple[str, ...]:
    """Options of an architecture that add an input whose weights start at zero (deepflows.nn.warm_start)."""
    return tuple(getattr(_architecture_class(architecture), "ADDED_INPUTS", ()))


def pileup_logits(model, images, noise):
    """A pileup model's logits; the per-example sample noise goes in only where the model reads it."""
    return model(images, noise) if getattr(model, "reads_sample_noise", False) else model(images)


def build_model(architecture: str, options: dict, channels: int, seed: int) -> nnx.Module:
    """A freshly initialised model; `options` are the architecture's keyword arguments from the config."""
    from deepflows.errors import UserError

    if architecture not in ARCHITECTURES:
        raise UserError(f"unknown model architecture '{architecture}' (known: {', '.join(ARCHITECTURES)})")
    known = architecture_options(architecture)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UserError(f"model option '{unknown[0]}' is not an option of {architecture} "
                        f"(options: {', '.join(known)})")  # fmt: skip
    try:
        model = nnx.eval_shape(lambda: ARCHITECTURES[architecture](channels=channels, **options, rngs=nnx.Rngs(seed)))
    except (TypeError, ValueError) as err:  # a wrong option value from a config, e.g. widths: 12
        raise UserError(f"{architecture} options {options}: {err}") from None
    _initialise(model, seed)
    return model


def _truncated_normal(rng: np.random.Generator, shape: tuple, std: float) -> np.ndarray:
    """Normal(0, std) truncated to +-2 std, as jax.nn.initializers.truncated_normal (resampling outliers)."""
    values = rng.standard_normal(shape, dtype=np.float32)
    outside = np.abs(values) > 2
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()), dtype=np.float32)
        outside = np.abs(values) > 2
    return values * np.float32(std)


def _initialise(model: nnx.Module, seed: int) -> None:
    """Fill an abstract model (from nnx.eval_shape) with Flax's default initial values, drawn on the host.

    Flax initialises eagerly, one compiled random-number kernel per distinct weight shape: about 100
    XLA compilations (a minute or more on a small CPU) for InceptionV3. The same distributions drawn with
    NumPy cost nothing to compile: kernels lecun_normal (truncated normal, variance 1/fan_in, as
    nnx.Conv and nnx.Linear), biases and batch-norm offsets and means 0, batch-norm scales and
    variances 1, weights named zero_init_* 0. Every value is a function of (seed, the variable's path), so it is
    reproducible.
    """
    import zlib

    import jax

    state = nnx.state(model)
    flat = {}
    for path, var in nnx.to_flat_state(state):
        value = var.get_value()
        name, shape = str(path[-1]), tuple(value.shape)
        key = "/".join(map(str, path))
        if isinstance(var, nnx.RngKey):
            value = jax.random.fold_in(jax.random.key(seed), zlib.crc32(key.encode()) & 0x7FFFFFFF)
        elif isinstance(var, nnx.RngCount):
            value = np.zeros(shape, np.uint32)
        elif name == "kernel":
            rng = np.random.default_rng([seed, *key.encode()])
            # lecun_normal: variance 1/fan_in; the truncation at 2 std shrinks it, hence the constant.
            value = _truncated_normal(rng, shape, (1.0 / np.prod(shape[:-1])) ** 0.5 / 0.87962566103423978)
        elif name in ("bias", "mean") or name.startswith(ZERO_INIT):
            value = np.zeros(shape, value.dtype)
        elif name == "embedding":  # BERT's initialiser, normal(0, 0.02)
            value = np.random.default_rng([seed, *key.encode()]).normal(0, 0.02, shape).astype(np.float32)
        elif name in ("scale", "var"):
            value = np.ones(shape, value.dtype)
        else:  # a new layer type: say so rather than guess its initialiser
            raise NotImplementedError(f"no host initialiser for model variable {key} ({type(var).__name__})")
        flat[path] = value
    device = jax.devices()[0]  # committed, as restored checkpoints are: one compilation serves both
    nnx.update(model, nnx.from_flat_state([(p, v.replace(jax.device_put(flat[p], device)))
                                            for p, v in nnx.to_flat_state(state)]))  # fmt: skip
