"""Count-based word vectors: window co-occurrence counts over a corpus, weighted by positive pointwise mutual
information (PPMI), optionally reduced by a truncated SVD; the co-occurrence baseline for word association.

For words w and contexts c within WINDOW tokens of each other (either side, never across a text unit such as a
paragraph or verse), with n(w, c) the count and N the total,

    PPMI(w, c) = max(0, log( n(w, c) N / (n(w) n_alpha(c)) )),    n_alpha(c) = N n(c)^alpha / sum_c' n(c')^alpha

where n(w) and n(c) are the row and column sums; alpha < 1 (context distribution smoothing, Levy, Goldberg and
Dagan 2015) lifts rare contexts' probability and so damps their PMI. alpha = 1 is plain PPMI.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import numpy as np

WINDOW = 5
MIN_COUNT = 5
ALPHA = 0.75
_WORD = re.compile(r"[a-z]+")


def tokenize(text: str) -> list[str]:
    """Lower-case runs of letters (apostrophes and hyphens split words: "Emma's" -> "emma", "s")."""
    return _WORD.findall(text.lower())


def cooccurrence(units: list[list[int]], size: int, window: int):
    """The symmetric count matrix (scipy CSR, size x size) of token ids within `window` of each other inside each
    unit (ids < 0, words left out of the vocabulary, hold their place but count for nothing)."""
    from scipy.sparse import coo_matrix

    # One array with `window` empty places between units, so that no window reaches across a unit's end.
    gap = [-1] * window
    ids = np.fromiter((i for unit in units for i in (*unit, *gap)), dtype=np.int64)
    rows, cols = [], []
    for distance in range(1, window + 1):
        left, right = ids[:-distance], ids[distance:]
        keep = (left >= 0) & (right >= 0)
        rows += [left[keep], right[keep]]
        cols += [right[keep], left[keep]]
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(size, size)).tocsr()


def ppmi_matrix(counts, alpha: float = ALPHA):
    """PPMI of a co-occurrence count matrix (scipy sparse), as the module says; zero where the count is zero."""
    from scipy.sparse import coo_matrix

    counts = counts.tocoo()
    row = np.asarray(counts.sum(axis=1)).ravel()
    col = np.asarray(counts.sum(axis=0)).ravel() ** alpha
    # n(w, c) N / (n(w) n_alpha(c)) with n_alpha(c) = N col_share(c): the totals cancel.
    pmi = np.log(counts.data / (row[counts.row] * (col / col.sum())[counts.col]))
    keep = pmi > 0
    return coo_matrix((pmi[keep], (counts.row[keep], counts.col[keep])), shape=counts.shape).tocsr()


class WordVectors:
    """Unit-length word vectors (rows) over a vocabulary; a phrase's vector is the normalised sum of its words'."""

    def __init__(self, vocabulary: list[str], rows):
        self.vocabulary = vocabulary
        self.index = {w: i for i, w in enumerate(vocabulary)}
        self.rows = _normalised_rows(rows)

    @classmethod
    def from_texts(cls, units: Iterable[str], window: int = WINDOW, min_count: int = MIN_COUNT,
                   alpha: float = ALPHA, dim: int | None = None) -> WordVectors:  # fmt: skip
        """PPMI vectors of the words seen at least `min_count` times in `units` (paragraphs, verses: windows stay
        inside one); `dim`: keep that many SVD dimensions (U times the singular values) instead of the sparse rows."""
        tokenized = [tokenize(u) for u in units]
        frequency = Counter(t for unit in tokenized for t in unit)
        vocabulary = sorted(w for w, n in frequency.items() if n >= min_count)
        index = {w: i for i, w in enumerate(vocabulary)}
        ids = [[index.get(t, -1) for t in unit] for unit in tokenized]
        ppmi = ppmi_matrix(cooccurrence(ids, len(vocabulary), window), alpha)
        if dim is None:
            return cls(vocabulary, ppmi)
        from scipy.sparse.linalg import svds

        u, s, _ = svds(ppmi, k=dim, random_state=0)
        return cls(vocabulary, u * s)

    def vector(self, text: str) -> np.ndarray | None:
        """The unit vector of a word or phrase; None when none of its words is in the vocabulary."""
        ids = [self.index[t] for t in tokenize(text) if t in self.index]
        if not ids:
            return None
        total = np.asarray(self.rows[ids].sum(axis=0)).ravel()
        norm = np.linalg.norm(total)
        return total / norm if norm > 0 else total

    def similarity(self, a: str, b: str) -> float | None:
        """Cosine of the two vectors; None when either is unknown."""
        va, vb = self.vector(a), self.vector(b)
        return None if va is None or vb is None else float(va @ vb)


def _normalised_rows(rows):
    """Rows scaled to unit length (all-zero rows stay zero), sparse or dense alike."""
    from scipy.sparse import diags, issparse

    if issparse(rows):
        norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1)).ravel())
        return diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ rows
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
