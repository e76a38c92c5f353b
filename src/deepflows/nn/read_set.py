"""A pileup classifier that reads the pileup read by read (Flax NNX): inputs uint8 [B, H, W, C], logits [B, 3].

Two pathways:
- Reads: each read row, in a window of columns around the candidate, goes through the same small encoder
  (two convolutions along the read, written as shifted copies through a dense layer: XLA's CPU backend
  differentiates matrix products far faster than convolutions), then the reads are pooled as a set: the
  mean (allele fractions: which share of the reads show an alt base with good quality on both strands),
  the max (is there any read like this) and the sum over ~30 reads (counts, which tell a het with 7 of
  25 reads from a hotspot artifact with 7 of 80). SmallCNN mixes four reads in its first layer and
  averages over reads before its dense layers, which blurs exactly these per-read combinations.
- Context: the per-column means of the raw channels over the reads, and the reference rows, over a wide
  span (homopolymers and tandem repeats around an indel reach far past the read window), through two
  convolutions along the columns, pooled in blocks, into a dense layer: where mismatches, gaps and
  repeats sit relative to the candidate, cheaply.

With `sample_noise`, the model also reads the sample's homopolymer noise (deepflows.genomics.examples.
sample_noise), one number per example added into the layer before the logits, where it meets the allele
fractions: a quarter of the reads one base shorter means a het in a clean library and noise in a stuttering
one. Its weights start at zero, so a model fine-tuned from one without it starts as that model. With
`unknown_noise` as well, an example may come without it (NaN: a run over too few homopolymers to measure it);
such an example gets a learned vector in its place, trained by hiding the noise of a share of the examples
(deepflows.nn.train, training.noise_dropout), so the model can still call a run it cannot measure.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from deepflows.nn.models import NUM_CLASSES, centre_columns, normalise

TYPICAL_DEPTH = 30.0  # scales the summed read features to about the allele fractions' range
NOISE_SCALE = 10.0  # sample noise is a share of reads, 0-0.3 in the libraries seen: about 0-3 after scaling


def shifted_stack(x: jnp.ndarray, kernel: int) -> jnp.ndarray:
    """[..., W, C] -> [..., W, kernel * C]: each column with its kernel // 2 neighbours on either side
    (zeros past the edges), so that a dense layer on the result is a 1-D convolution along W."""
    half = kernel // 2
    pad = [(0, 0)] * (x.ndim - 2) + [(half, half), (0, 0)]
    padded = jnp.pad(x, pad)
    width = x.shape[-2]
    return jnp.concatenate([padded[..., i:i + width, :] for i in range(kernel)], axis=-1)


def window_columns(x: jnp.ndarray, n: int) -> jnp.ndarray:
    """The n middle columns of [B, H, W, ...] (axis 2), zero-padded when W < n."""
    b, h = x.shape[:2]
    flat = jnp.moveaxis(x, 2, 1).reshape(b, x.shape[2], -1)
    return jnp.moveaxis(centre_columns(flat, n).reshape(b, n, h, *x.shape[3:]), 1, 2)


class ReadSetNet(nnx.Module):
    """Per-read encoder pooled as a set, plus a wide per-column context; see the module docstring.

    Options: `window` columns around the candidate are read per read; `kernel` is the convolutions' width;
    `widths` the features of the first read convolution (over the whole window) and of the second (only
    over the `centre` columns next to the candidate, where most of the evidence is: a second layer over
    the whole window costs five times as much on a CPU); `read_features` the per-read vector (the second
    convolution's centre columns and the first one's max along the read) and the context vector;
    `context` the columns of the context pathway, mean-pooled in blocks of `context_pool`; `hidden` the
    width before the 3 logits; `sample_noise` adds the sample's noise as an input, `unknown_noise` lets it be
    missing (module docstring).
    """

    # a model without these options may start a run with them on (deepflows.nn.warm_start)
    ADDED_INPUTS = ("sample_noise", "unknown_noise")

    def __init__(self, channels: int = 8, reference_rows: int = 5, window: int = 33, kernel: int = 5,
                 widths: tuple[int, int] = (32, 64), read_features: int = 64, centre: int = 5, context: int = 101,
                 context_pool: int = 4, hidden: int = 128, dropout: float = 0.2, sample_noise: bool = False,
                 unknown_noise: bool = False, *, rngs: nnx.Rngs):  # fmt: skip
        if len(widths) != 2 or min(widths) < 1 or min(window, kernel, centre, context, context_pool) < 1:
            raise ValueError("widths must be two numbers >= 1; window, kernel, centre, context and context_pool >= 1")
        if centre > window:
            raise ValueError(f"centre ({centre}) must fit in the window ({window})")
        self.reference_rows, self.window, self.kernel = int(reference_rows), int(window), int(kernel)
        self.centre, self.context, self.context_pool = int(centre), int(context), int(context_pool)
        w1, w2 = (int(v) for v in widths)
        self.conv1 = nnx.Linear(kernel * channels, w1, use_bias=False, rngs=rngs)
        self.norm1 = nnx.LayerNorm(w1, rngs=rngs)
        self.conv2 = nnx.Linear(kernel * w1, w2, use_bias=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(w2, rngs=rngs)
        self.read = nnx.Linear(self.centre * w2 + w1, read_features, rngs=rngs)
        self.context1 = nnx.Linear(kernel * 2 * channels, w1, use_bias=False, rngs=rngs)
        self.context_norm1 = nnx.LayerNorm(w1, rngs=rngs)
        self.context2 = nnx.Linear(kernel * w1, w1, use_bias=False, rngs=rngs)
        self.context_norm2 = nnx.LayerNorm(w1, rngs=rngs)
        blocks = -(-self.context // self.context_pool)
        self.context_dense = nnx.Linear(blocks * w1, read_features, rngs=rngs)
        self.dense = nnx.Linear(4 * read_features + 1, hidden, rngs=rngs)
        if unknown_noise and not sample_noise:
            raise ValueError("unknown_noise needs sample_noise")
        self.reads_sample_noise, self.knows_unknown_noise = bool(sample_noise), bool(unknown_noise)
        if self.reads_sample_noise:
            self.zero_init_noise = nnx.Param(jnp.zeros((hidden,), jnp.float32))  # per hidden unit
        if self.knows_unknown_noise:
            self.zero_init_unknown_noise = nnx.Param(jnp.zeros((hidden,), jnp.float32))
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(hidden, NUM_CLASSES, rngs=rngs)

    def __call__(self, x, noise=None):
        present = jnp.any(x[:, self.reference_rows:] > 0, axis=(2, 3))  # [B, reads]: rows that hold a read
        mask = present[:, :, None].astype(jnp.float32)
        count = jnp.sum(mask, axis=1)  # [B, 1]
        pooled = [*self._reads(window_columns(x, self.window), mask, count), self._context(x, mask, count)]
        pooled = jnp.concatenate([*pooled, jnp.log1p(count)], axis=-1)
        hidden = self.dense(pooled)
        if self.reads_sample_noise:
            noise = noise.astype(jnp.float32)
            if self.knows_unknown_noise:
                unknown = jnp.isnan(noise)
                hidden = hidden + unknown[:, None] * self.zero_init_unknown_noise[...]
                noise = jnp.where(unknown, 0.0, noise)  # before the product: no NaN reaches a gradient
            hidden = hidden + (noise * NOISE_SCALE)[:, None] * self.zero_init_noise[...]
        return self.head(self.dropout(nnx.relu(hidden)))

    def _reads(self, x, mask, count):
        """Mean, max and depth-scaled sum over the reads of each read's vector."""
        h = nnx.relu(self.norm1(self.conv1(shifted_stack(normalise(x[:, self.reference_rows:]), self.kernel))))
        near = window_columns(h, self.centre + self.kernel - 1)
        near = window_columns(shifted_stack(near, self.kernel), self.centre)  # valid columns only
        near = nnx.relu(self.norm2(self.conv2(near)))  # [B, R, centre, w2]
        b, r = near.shape[:2]
        per_read = jnp.concatenate([near.reshape(b, r, -1), jnp.max(h, axis=2)], axis=-1)
        per_read = nnx.relu(self.read(per_read)) * mask  # [B, R, F]; absent reads are 0 (features >= 0)
        total = jnp.sum(per_read, axis=1)
        return total / jnp.maximum(count, 1.0), jnp.max(per_read, axis=1), total / TYPICAL_DEPTH

    def _context(self, x, mask, count):
        """The context vector from per-column channel means of the reads and of the reference rows."""
        x = normalise(window_columns(x, self.context))  # [B, H, context, C]
        reads = jnp.sum(x[:, self.reference_rows:] * mask[..., None], axis=1) / jnp.maximum(count, 1.0)[..., None]
        columns = jnp.concatenate([reads, jnp.mean(x[:, :self.reference_rows], axis=1)], axis=-1)  # [B, context, 2C]
        h = nnx.relu(self.context_norm1(self.context1(shifted_stack(columns, self.kernel))))
        h = nnx.relu(self.context_norm2(self.context2(shifted_stack(h, self.kernel))))
        b, n, f = h.shape
        blocks = -(-n // self.context_pool)
        h = jnp.pad(h, ((0, 0), (0, blocks * self.context_pool - n), (0, 0)))
        h = jnp.mean(h.reshape(b, blocks, self.context_pool, f), axis=2)
        return nnx.relu(self.context_dense(h.reshape(b, -1)))
