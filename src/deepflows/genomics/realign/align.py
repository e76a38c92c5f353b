"""Affine-gap pairwise alignment (Gotoh) compiled with numba, for the local realigner.

Two kernels: `align` (with traceback) and `score` (the same best score in linear memory, no traceback;
the realigner scores every read against every haplotype with it and traces back only the pairs it keeps).
Both serve both uses:
- haplotype vs reference window: global (both sequences end to end);
- read vs padded haplotype: the read is aligned end to end except that either end may be clipped at a
  fixed penalty (so adapter or junk tails become soft clips), and the haplotype's ends are free.

Ties in the traceback prefer the diagonal, which pushes gaps as far left as they can go: indels in
repeats come out left-aligned, as VCF normalisation wants them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

# Per-base moves of an alignment path (and CIGAR codes M, I, D).
MATCH, INSERT, DELETE = 0, 1, 2
# Traceback states; BEGIN marks where the path starts.
_M, _I, _D, _BEGIN = 0, 1, 2, 3
_NEG = -(1 << 28)


@dataclass(frozen=True)
class Scoring:
    match: int = 1
    mismatch: int = 4
    gap_open: int = 6  # a gap of length L costs gap_open + L * gap_extend
    gap_extend: int = 1
    clip: int = 5  # per clipped read end (glocal mode only)


@numba.njit(cache=True, nogil=True)
def _substitution(a, b, match, mismatch):
    if a == 4 or b == 4:  # N matches nothing and costs nothing
        return 0
    return match if a == b else -mismatch


@numba.njit(cache=True, nogil=True)
def _begin(i, j, clip, glocal):
    """Score of a path that starts just after query[:i] and target[:j]: a clipped query prefix costs
    `clip`, a skipped target prefix is free (glocal); a global path starts only at (0, 0)."""
    if glocal:
        return -clip if i > 0 else 0
    return 0 if (i == 0 and j == 0) else _NEG


@numba.njit(cache=True, nogil=True)
def align(query, target, match, mismatch, gap_open, gap_extend, clip, glocal):
    """Best alignment of `query` to `target` (uint8 base codes).

    Returns (score, query_start, query_end, target_start, moves) where query[query_start:query_end] is
    aligned, moves[k] is MATCH / INSERT (query base only) / DELETE (target base only) in path order, and
    target_start is the target index of the first move. With glocal=False: query_start=0,
    query_end=len(query), target_start=0 and the path covers the whole target.
    """
    n, m = len(query), len(target)
    open_cost = gap_open + gap_extend
    sm = np.full((n + 1, m + 1), _NEG, dtype=np.int32)
    si = np.full((n + 1, m + 1), _NEG, dtype=np.int32)
    sd = np.full((n + 1, m + 1), _NEG, dtype=np.int32)
    # Traceback: the state each cell's best path came from, per state.
    bm = np.full((n + 1, m + 1), _BEGIN, dtype=np.uint8)
    bi = np.full((n + 1, m + 1), _BEGIN, dtype=np.uint8)
    bd = np.full((n + 1, m + 1), _BEGIN, dtype=np.uint8)
    for i in range(n + 1):
        q = query[i - 1] if i > 0 else 0
        for j in range(m + 1):
            if i > 0 and j > 0:
                # Ties: the diagonal wins, then gaps, then a fresh start.
                best, state = _begin(i - 1, j - 1, clip, glocal), _BEGIN
                x = si[i - 1, j - 1]
                if x >= best:
                    best, state = x, _I
                x = sd[i - 1, j - 1]
                if x >= best:
                    best, state = x, _D
                x = sm[i - 1, j - 1]
                if x >= best:
                    best, state = x, _M
                if best > _NEG // 2:
                    sm[i, j] = best + _substitution(q, target[j - 1], match, mismatch)
                    bm[i, j] = state
            if i > 0:
                best, state = _begin(i - 1, j, clip, glocal) - open_cost, _BEGIN
                x = sd[i - 1, j] - open_cost
                if x >= best:
                    best, state = x, _D
                x = si[i - 1, j] - gap_extend
                if x >= best:
                    best, state = x, _I
                x = sm[i - 1, j] - open_cost
                if x >= best:
                    best, state = x, _M
                if best > _NEG // 2:
                    si[i, j] = best
                    bi[i, j] = state
            if j > 0:
                best, state = _begin(i, j - 1, clip, glocal) - open_cost, _BEGIN
                x = si[i, j - 1] - open_cost
                if x >= best:
                    best, state = x, _I
                x = sd[i, j - 1] - gap_extend
                if x >= best:
                    best, state = x, _D
                x = sm[i, j - 1] - open_cost
                if x >= best:
                    best, state = x, _M
                if best > _NEG // 2:
                    sd[i, j] = best
                    bd[i, j] = state
    # Where the path ends.
    end_i, end_j, end_state, best = n, m, _M, _NEG
    if glocal:
        for i in range(1, n + 1):
            penalty = clip if i < n else 0
            for j in range(1, m + 1):
                if sm[i, j] - penalty > best:
                    best, end_i, end_j = sm[i, j] - penalty, i, j
    else:
        if si[n, m] >= best:
            best, end_state = si[n, m], _I
        if sd[n, m] >= best:
            best, end_state = sd[n, m], _D
        if sm[n, m] >= best:
            best, end_state = sm[n, m], _M
    moves = np.empty(n + m, dtype=np.int8)
    k = 0
    i, j, state = end_i, end_j, end_state
    while state != _BEGIN and (i > 0 or j > 0):
        if state == _M:
            state = bm[i, j]
            moves[k] = MATCH
            i -= 1
            j -= 1
        elif state == _I:
            state = bi[i, j]
            moves[k] = INSERT
            i -= 1
        else:
            state = bd[i, j]
            moves[k] = DELETE
            j -= 1
        k += 1
    return best, i, end_i, j, moves[:k][::-1].copy()


@numba.njit(cache=True, nogil=True)
def score(query, target, match, mismatch, gap_open, gap_extend, clip, glocal, diag_lo, diag_hi):
    """The score `align` returns, from the same recurrences kept two rows at a time, over the cells (i, j)
    with diag_lo <= j - i <= diag_hi only (a band around where the query is expected; wide enough, it is
    exactly `align`'s score, else a lower bound)."""
    n, m = len(query), len(target)
    open_cost = gap_open + gap_extend
    pm = np.full(m + 1, _NEG, dtype=np.int32)  # previous row (i - 1) of each state
    pi = np.full(m + 1, _NEG, dtype=np.int32)
    pd = np.full(m + 1, _NEG, dtype=np.int32)
    cm = np.full(m + 1, _NEG, dtype=np.int32)  # current row (i)
    ci = np.full(m + 1, _NEG, dtype=np.int32)
    cd = np.full(m + 1, _NEG, dtype=np.int32)
    best_end = _NEG
    for i in range(n + 1):
        q = query[i - 1] if i > 0 else 0
        j0, j1 = max(i + diag_lo, 0), min(i + diag_hi, m)
        if j0 > 0:  # left of the band (this row's arrays still hold row i - 2)
            cm[j0 - 1], ci[j0 - 1], cd[j0 - 1] = _NEG, _NEG, _NEG
        for j in range(j0, j1 + 1):
            cm[j], ci[j], cd[j] = _NEG, _NEG, _NEG
            if i > 0 and j > 0:
                best = max(_begin(i - 1, j - 1, clip, glocal), pi[j - 1], pd[j - 1], pm[j - 1])
                if best > _NEG // 2:
                    cm[j] = best + _substitution(q, target[j - 1], match, mismatch)
            if i > 0:
                best = max(_begin(i - 1, j, clip, glocal) - open_cost, pd[j] - open_cost, pi[j] - gap_extend,
                           pm[j] - open_cost)  # fmt: skip
                if best > _NEG // 2:
                    ci[j] = best
            if j > 0:
                best = max(_begin(i, j - 1, clip, glocal) - open_cost, ci[j - 1] - open_cost, cd[j - 1] - gap_extend,
                           cm[j - 1] - open_cost)  # fmt: skip
                if best > _NEG // 2:
                    cd[j] = best
        if glocal and i > 0:
            penalty = clip if i < n else 0
            for j in range(max(j0, 1), j1 + 1):
                best_end = max(best_end, cm[j] - penalty)
        pm, cm = cm, pm
        pi, ci = ci, pi
        pd, cd = cd, pd
    if glocal:
        return best_end
    return max(pi[m], pd[m], pm[m]) if n + diag_lo <= m <= n + diag_hi else _NEG


def score_pair(query: np.ndarray, target: np.ndarray, scoring: Scoring, glocal: bool,
               band: tuple[int, int] | None = None) -> int:  # fmt: skip
    """`align_pair`'s score; with `band` = (lo, hi), only over paths with lo <= target index - query index <= hi."""
    diag_lo, diag_hi = band if band is not None else (-len(query), len(target))
    return score(query, target, scoring.match, scoring.mismatch, scoring.gap_open, scoring.gap_extend,
                 scoring.clip, glocal, diag_lo, diag_hi)  # fmt: skip


def align_pair(query: np.ndarray, target: np.ndarray, scoring: Scoring, glocal: bool):
    return align(query, target, scoring.match, scoring.mismatch, scoring.gap_open, scoring.gap_extend,
                 scoring.clip, glocal)  # fmt: skip
