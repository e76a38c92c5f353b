"""Where reads suggest a non-reference haplotype: the windows the local realigner assembles.

Evidence, per read: each insertion or deletion (but a 1-bp one in a homopolymer run of at least
`min_homopolymer` bases: slippage, or a true indel that the aligner already places right), each soft
clip of at least `min_soft_clip` bases (at the aligned base next to it), and each mismatch that has
another mismatch within `mismatch_cluster` bp in the same read (isolated mismatches are SNPs or errors,
which realignment does not change). A position is active when evidence from at least `min_reads` reads
lies within `slop` bp of it; active stretches closer than `merge_distance` are merged, padded by
`padding` and cut to at most `max_length` bp.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numba
import numpy as np

from deepflows.genomics.examples.allele_counts import DEL, INS, SKIP, SOFT, _is_match


@dataclass(frozen=True)
class WindowParams:
    min_soft_clip: int = 5
    min_homopolymer: int = 4
    mismatch_cluster: int = 10
    min_reads: int = 3
    slop: int = 5
    merge_distance: int = 20
    padding: int = 20
    max_length: int = 300


@numba.njit(cache=True, nogil=True)
def _evidence_depth(lo, ref, starts, cigar_op, cigar_len, cigar_offset, seq, seq_offset,
                    min_soft_clip, min_homopolymer, mismatch_cluster, slop):  # fmt: skip
    """Per position of [lo, lo + len(ref)): how many evidence intervals (dilated by `slop`) cover it."""
    width = len(ref)
    diff = np.zeros(width + 1, dtype=np.int32)
    mismatches = np.empty(1024, dtype=np.int64)
    for r in range(len(starts)):
        pos = starts[r]
        qpos = seq_offset[r]
        n_mismatch = 0
        c0, c1 = cigar_offset[r], cigar_offset[r + 1]
        for c in range(c0, c1):
            op = cigar_op[c]
            length = cigar_len[c]
            a, b = -1, -1  # evidence interval [a, b) in reference coordinates
            if _is_match(op):
                for k in range(length):
                    p = pos + k - lo
                    base = seq[qpos + k]
                    if 0 <= p < width and base != 4 and ref[p] != 4 and base != ref[p] and n_mismatch < len(mismatches):
                        mismatches[n_mismatch] = pos + k
                        n_mismatch += 1
                pos += length
                qpos += length
            elif op == INS:
                if length > 1 or not _in_homopolymer(ref, pos - lo, seq[qpos], min_homopolymer):
                    a, b = pos - 1, pos + 1
                qpos += length
            elif op == DEL:
                deleted = ref[pos - lo] if 0 <= pos - lo < width else 4
                if length > 1 or not _in_homopolymer(ref, pos - lo, deleted, min_homopolymer):
                    a, b = pos - 1, pos + length
                pos += length
            elif op == SOFT:
                if length >= min_soft_clip:
                    a, b = pos - 1, pos + 1
                qpos += length
            elif op == SKIP:
                pos += length
            if a >= 0:
                _add(diff, a - slop - lo, b + slop - lo)
        for m in range(n_mismatch):
            near = (m > 0 and mismatches[m] - mismatches[m - 1] <= mismatch_cluster) or (
                m + 1 < n_mismatch and mismatches[m + 1] - mismatches[m] <= mismatch_cluster
            )
            if near:
                _add(diff, mismatches[m] - slop - lo, mismatches[m] + 1 + slop - lo)
    return np.cumsum(diff[:width])


@numba.njit(cache=True, nogil=True)
def _in_homopolymer(ref, p, base, min_length):
    """Whether `base`, inserted before ref[p] or deleted at ref[p], lies in a run of it in ref around p of
    at least `min_length` bases (the deleted base included)."""
    if base == 4 or not 0 <= p <= len(ref):
        return False
    a = p - 1
    while a >= 0 and ref[a] == base:
        a -= 1
    b = p
    while b < len(ref) and ref[b] == base:
        b += 1
    return b - a - 1 >= min_length


@numba.njit(cache=True, nogil=True)
def _add(diff, a, b):
    width = len(diff) - 1
    a, b = max(a, 0), min(b, width)
    if a < b:
        diff[a] += 1
        diff[b] -= 1


def active_windows(batch, ref_codes: np.ndarray, ref_offset: int, params: WindowParams) -> list[tuple[int, int]]:
    """[start, end) windows in reference coordinates, sorted, non-overlapping, inside the given reference."""
    if len(batch) == 0 or len(ref_codes) == 0:
        return []
    depth = _evidence_depth(
        ref_offset, ref_codes, batch.start, batch.cigar_op, batch.cigar_len, batch.cigar_offset, batch.seq,
        batch.seq_offset, params.min_soft_clip, params.min_homopolymer, params.mismatch_cluster, params.slop,
    )  # fmt: skip
    active = np.flatnonzero(depth >= params.min_reads)
    if len(active) == 0:
        return []
    breaks = np.flatnonzero(np.diff(active) > params.merge_distance)
    firsts = np.concatenate([[active[0]], active[breaks + 1]])
    lasts = np.concatenate([active[breaks], [active[-1]]])
    windows = []
    for first, last in zip(firsts.tolist(), lasts.tolist()):
        a = max(first - params.padding, 0)
        b = min(last + 1 + params.padding, len(ref_codes))
        n_pieces = -(-(b - a) // params.max_length)
        edges = np.linspace(a, b, n_pieces + 1).round().astype(int)
        windows += [(ref_offset + int(x), ref_offset + int(y)) for x, y in itertools.pairwise(edges)]
    # Padding may make neighbours overlap: trim so that each position belongs to one window.
    for i in range(1, len(windows)):
        if windows[i][0] < windows[i - 1][1]:
            windows[i] = (windows[i - 1][1], windows[i][1])
    return [w for w in windows if w[1] > w[0]]
