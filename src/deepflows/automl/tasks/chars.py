"""A small character-level Transformer language model on Jane Austen's six novels
(../shared/data/text/books/*.txt, read by deepflows.text.books.reader.read_book, which drops the Gutenberg
licence, front matter and chapter headings): a transfer task of the optimizer benchmark.

Splits by position within each novel: the last 5% is test, the 5% before it tune, the rest train (so no split
shares a passage with another). The vocabulary is the training text's characters; any other character is id 0.
The metric is bits per character (lower is better) over a fixed set of evenly spaced windows of each split.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from deepflows.errors import UserError

TUNE, TEST = 0.05, 0.05  # fractions of each novel, taken from its end
EVAL_WINDOWS = 128  # windows per evaluation split: 128 x 64 = 8,192 characters scored


def novel_texts(books: str | Path) -> list[str]:
    """Each novel's body paragraphs (not the KJV, a verse TSV), joined by blank lines, in file-name order."""
    from deepflows.text.books.reader import read_book

    paths = sorted(Path(books).glob("*.txt"))
    if not paths:
        raise UserError(f"{books}: no *.txt novels in it")
    texts = []
    for path in paths:
        book = read_book(path)
        texts.append("\n\n".join(book.paragraph_text(i) for i, p in enumerate(book.paragraphs) if p.body))
    return texts


def split_texts(texts: list[str]) -> dict[str, str]:
    """Each novel cut by position into train / tune / test, the pieces of each split concatenated."""
    parts: dict[str, list[str]] = {"train": [], "tune": [], "test": []}
    for text in texts:
        a, b = round(len(text) * (1 - TUNE - TEST)), round(len(text) * (1 - TEST))
        for name, piece in zip(parts, (text[:a], text[a:b], text[b:])):
            parts[name].append(piece)
    return {name: "\n\n".join(pieces) for name, pieces in parts.items()}


class CharTransformer:
    """Pre-norm causal Transformer: embeddings + learnt positions, `layers` blocks of multi-head self-attention
    and a 4x-wide MLP, a final LayerNorm and a linear read-out to the vocabulary."""

    def __new__(cls, rngs, vocab: int, context: int = 64, width: int = 64, layers: int = 2, heads: int = 4):
        import jax
        from flax import nnx

        class _Block(nnx.Module):
            def __init__(self, rngs):
                self.norm1, self.norm2 = nnx.LayerNorm(width, rngs=rngs), nnx.LayerNorm(width, rngs=rngs)
                self.attn = nnx.MultiHeadAttention(heads, width, decode=False, keep_rngs=False, rngs=rngs)
                self.up, self.down = nnx.Linear(width, 4 * width, rngs=rngs), nnx.Linear(4 * width, width, rngs=rngs)

            def __call__(self, x, mask):
                x = x + self.attn(self.norm1(x), mask=mask)
                return x + self.down(nnx.gelu(self.up(self.norm2(x))))

        class _LM(nnx.Module):
            def __init__(self, rngs):
                self.embed = nnx.Embed(vocab, width, rngs=rngs)
                self.position = nnx.Param(0.02 * jax.random.normal(rngs.params(), (context, width)))
                self.blocks = nnx.List([_Block(rngs) for _ in range(layers)])
                self.norm = nnx.LayerNorm(width, rngs=rngs)
                self.out = nnx.Linear(width, vocab, rngs=rngs)

            def __call__(self, ids):
                x = self.embed(ids) + self.position[: ids.shape[1]]
                mask = nnx.make_causal_mask(ids)
                for block in self.blocks:
                    x = block(x, mask)
                return self.out(self.norm(x))

        return _LM(rngs)


class CharsTask:
    """Next-character prediction on the Austen novels: train on `train`, bits per character on `tune` or `test`."""

    name = "austen_chars"
    metric = "bits_per_char"
    higher_is_better = False

    def __init__(self, books: str | Path, *, batch_size: int = 16, context: int = 64, width: int = 64,
                 layers: int = 2, heads: int = 4):  # fmt: skip
        import jax.numpy as jnp

        splits = split_texts(novel_texts(books))
        self.vocab = ["\0", *sorted(set(splits["train"]))]  # id 0: a character the training text lacks
        index = {c: i for i, c in enumerate(self.vocab)}
        ids = {name: np.fromiter((index.get(c, 0) for c in text), np.int32, len(text)) for name, text in splits.items()}
        self.sizes = {name: len(x) for name, x in ids.items()}
        self.chance_loss = math.log(len(self.vocab))
        self._train = jnp.asarray(ids["train"])
        # evenly spaced windows of context + 1 characters (inputs and their next characters)
        self._eval = {}
        for name in ("tune", "test"):
            starts = np.linspace(0, len(ids[name]) - context - 1, EVAL_WINDOWS).astype(int)
            self._eval[name] = jnp.asarray(np.stack([ids[name][s : s + context + 1] for s in starts]))
        self.batch_size, self.context, self.width, self.layers, self.heads = batch_size, context, width, layers, heads

    def model(self, rngs):
        return CharTransformer(rngs, len(self.vocab), self.context, self.width, self.layers, self.heads)

    def batch(self, key):
        import jax
        import jax.numpy as jnp

        starts = jax.random.randint(key, (self.batch_size,), 0, len(self._train) - self.context - 1)
        return jax.vmap(lambda s: jax.lax.dynamic_slice(self._train, (s,), (self.context + 1,)))(starts)

    def loss(self, model, batch, key):
        import optax

        return optax.softmax_cross_entropy_with_integer_labels(model(batch[:, :-1]), batch[:, 1:]).mean()

    def evaluate(self, model, split):
        return self.loss(model, self._eval[split], None) / math.log(2)
