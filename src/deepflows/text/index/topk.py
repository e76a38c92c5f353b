"""Exact top-k by inner product over a matrix read one chunk of rows at a time: a JAX matmul per chunk and a
running top-k, so memory holds one chunk (and the next, read ahead) whatever the number of rows.

Every chunk is padded to the same number of rows, so the merge step compiles once per (queries, k, chunk).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np


@partial(jax.jit, static_argnames="k")
def _merge(best_scores, best_rows, queries, block, first_row, low, high, k: int):
    """The running top-k merged with the scores of `block` (rows first_row...), rows outside [low, high) left out."""
    scores = queries @ block.astype(jnp.float32).T
    rows = first_row + jnp.arange(block.shape[0], dtype=jnp.int32)
    scores = jnp.where((rows >= low) & (rows < high), scores, -jnp.inf)
    scores = jnp.concatenate([best_scores, scores], axis=1)
    rows = jnp.concatenate([best_rows, jnp.broadcast_to(rows, (queries.shape[0], rows.shape[0]))], axis=1)
    best_scores, at = jax.lax.top_k(scores, k)
    return best_scores, jnp.take_along_axis(rows, at, axis=1)


def exact_topk(queries: np.ndarray, blocks: Iterable[tuple[int, Callable[[], np.ndarray]]], chunk_rows: int, k: int,
               low: int, high: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(scores float32 [q, k], rows int64 [q, k]), best first, of rows low..high-1 of a matrix given as `blocks`:
    (first row, a function reading that chunk) pairs. The next chunk is read while this one is scored."""
    q = jnp.asarray(queries, jnp.float32)
    best_scores = jnp.full((q.shape[0], k), -jnp.inf, jnp.float32)
    best_rows = jnp.full((q.shape[0], k), -1, jnp.int32)
    blocks = list(blocks)
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(blocks[0][1]) if blocks else None
        for i, (first_row, _) in enumerate(blocks):
            block = pending.result()
            pending = reader.submit(blocks[i + 1][1]) if i + 1 < len(blocks) else None
            if block.shape[0] < chunk_rows:
                block = np.concatenate([block, np.zeros((chunk_rows - block.shape[0], block.shape[1]), block.dtype)])
            best_scores, best_rows = _merge(best_scores, best_rows, q, block, first_row, low, high, k=k)
    return np.asarray(best_scores, np.float32), np.asarray(best_rows).astype(np.int64)


def rescore(queries: np.ndarray, rows: np.ndarray, vectors_of: Callable[[np.ndarray], np.ndarray],
            k: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The k best of each query's candidate `rows` [q, c] (-1: none) by exact inner product, best first;
    `vectors_of(sorted unique rows)` reads their vectors."""
    wanted = np.unique(rows[rows >= 0])
    if not len(wanted):
        return np.full((len(rows), min(k, rows.shape[1])), -np.inf, np.float32), rows[:, :k]
    candidates = np.asarray(vectors_of(wanted), np.float32)[np.searchsorted(wanted, np.maximum(rows, 0))]
    scores = np.einsum("qd,qcd->qc", np.asarray(queries, np.float32), candidates)
    scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)
