"""A BERT encoder in Flax NNX, laid out as Hugging Face's BertModel so that its published weights load by name.

Used with the MiniLM-L6-H384 configuration of all-MiniLM-L6-v2 (6 layers, 384 wide, 12 heads): token, position
and segment embeddings, then post-norm transformer layers (self-attention, exact-erf GELU feed-forward). The
sentence vector is the mean of the token vectors over the real (unpadded) tokens, L2-normalised, as the
sentence-transformers model card defines it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

LAYER_NORM_EPS = 1e-12  # BertModel's layer_norm_eps


class Embeddings(nnx.Module):
    def __init__(self, vocab: int, hidden: int, max_positions: int, type_vocab: int, dropout: float, *,
                 rngs: nnx.Rngs):  # fmt: skip
        self.word = nnx.Embed(vocab, hidden, rngs=rngs)
        self.position = nnx.Embed(max_positions, hidden, rngs=rngs)
        self.token_type = nnx.Embed(type_vocab, hidden, rngs=rngs)
        self.norm = nnx.LayerNorm(hidden, epsilon=LAYER_NORM_EPS, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, ids):
        x = self.word(ids) + self.position.embedding[: ids.shape[1]][None] + self.token_type.embedding[0]
        return self.dropout(self.norm(x))


class Layer(nnx.Module):
    """One post-norm transformer layer: x + attention -> norm -> x + feed-forward -> norm."""

    def __init__(self, hidden: int, heads: int, intermediate: int, dropout: float, *, rngs: nnx.Rngs):
        if hidden % heads:
            raise ValueError(f"hidden {hidden} is not a multiple of heads {heads}")
        self.heads = heads
        self.query = nnx.Linear(hidden, hidden, rngs=rngs)
        self.key = nnx.Linear(hidden, hidden, rngs=rngs)
        self.value = nnx.Linear(hidden, hidden, rngs=rngs)
        self.attention_out = nnx.Linear(hidden, hidden, rngs=rngs)
        self.attention_norm = nnx.LayerNorm(hidden, epsilon=LAYER_NORM_EPS, rngs=rngs)
        self.intermediate = nnx.Linear(hidden, intermediate, rngs=rngs)
        self.out = nnx.Linear(intermediate, hidden, rngs=rngs)
        self.out_norm = nnx.LayerNorm(hidden, epsilon=LAYER_NORM_EPS, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x, mask):
        b, t, d = x.shape
        split = lambda y: y.reshape(b, t, self.heads, d // self.heads)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d // self.heads)
        # Padded keys get a large negative score (BertModel adds the dtype's minimum): no weight after softmax.
        scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
        attended = jnp.einsum("bhqk,bkhd->bqhd", self.dropout(jax.nn.softmax(scores, axis=-1)), v).reshape(b, t, d)
        x = self.attention_norm(x + self.dropout(self.attention_out(attended)))
        hidden = jax.nn.gelu(self.intermediate(x), approximate=False)
        return self.out_norm(x + self.dropout(self.out(hidden)))


class SentenceBert(nnx.Module):
    """Token ids [B, T] int32 and mask [B, T] bool -> L2-normalised sentence vectors [B, hidden].

    `trainable_layers` k: only the top k transformer layers learn (the gradient stops below them, embeddings
    included), which is how deepflows.text.response.finetune adapts the pretrained encoder; None: every weight learns.
    `channels` is what the model registry passes every architecture; token ids have none, so it is unused.
    """

    def __init__(self, channels: int = 1, vocab: int = 30522, hidden: int = 384, layers: int = 6, heads: int = 12,
                 intermediate: int = 1536, max_positions: int = 512, type_vocab: int = 2, dropout: float = 0.1,
                 trainable_layers: int | None = None, *, rngs: nnx.Rngs):  # fmt: skip
        if trainable_layers is not None and not 1 <= trainable_layers <= layers:
            raise ValueError(f"trainable_layers {trainable_layers} is not between 1 and layers {layers}")
        self.embeddings = Embeddings(vocab, hidden, max_positions, type_vocab, dropout, rngs=rngs)
        self.layers = nnx.List([Layer(hidden, heads, intermediate, dropout, rngs=rngs) for _ in range(layers)])
        self.first_trained = None if trainable_layers is None else layers - trainable_layers

    def tokens(self, ids, mask):
        """The last layer's token vectors [B, T, hidden]."""
        x = self.embeddings(ids)
        for i, layer in enumerate(self.layers):
            if i == self.first_trained:  # embeddings and the layers below stay as they are
                x = jax.lax.stop_gradient(x)
            x = layer(x, mask)
        return x

    def __call__(self, ids, mask):
        x = self.tokens(ids, mask)
        weights = mask[..., None].astype(x.dtype)
        pooled = (x * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1e-9)
        return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def hf_names(layers: int) -> dict[tuple, tuple[str, bool]]:
    """Our parameter path -> (BertModel's safetensors name, whether the array is transposed: a torch Linear
    stores [out, in], a Flax Linear kernel [in, out])."""
    names = {("embeddings", "word", "embedding"): ("embeddings.word_embeddings.weight", False),
             ("embeddings", "position", "embedding"): ("embeddings.position_embeddings.weight", False),
             ("embeddings", "token_type", "embedding"): ("embeddings.token_type_embeddings.weight", False),
             ("embeddings", "norm", "scale"): ("embeddings.LayerNorm.weight", False),
             ("embeddings", "norm", "bias"): ("embeddings.LayerNorm.bias", False)}  # fmt: skip
    parts = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
             "attention_out": "attention.output.dense", "intermediate": "intermediate.dense", "out": "output.dense"}
    norms = {"attention_norm": "attention.output.LayerNorm", "out_norm": "output.LayerNorm"}
    for i in range(layers):
        for ours, theirs in parts.items():
            names["layers", i, ours, "kernel"] = (f"encoder.layer.{i}.{theirs}.weight", True)
            names["layers", i, ours, "bias"] = (f"encoder.layer.{i}.{theirs}.bias", False)
        for ours, theirs in norms.items():
            names["layers", i, ours, "scale"] = (f"encoder.layer.{i}.{theirs}.weight", False)
            names["layers", i, ours, "bias"] = (f"encoder.layer.{i}.{theirs}.bias", False)
    return names
