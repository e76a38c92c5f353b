"""Compiled CIGAR walks over a ReadBatch: allele counting and per-read alleles at a position.

Conventions follow DeepVariant's allele counter: every read contributes at most one allele per
position. A base followed by an insertion or deletion is an indel anchor: the read's allele there is
the indel (anchor base + inserted bases, or anchor + deleted reference bases), not the base. Bases with
quality below `min_base_quality` count for nothing.
"""

from __future__ import annotations

import numba
import numpy as np

M, INS, DEL, SKIP, SOFT, HARD, PAD, EQ, DIFF = range(9)
KIND_INSERTION, KIND_DELETION = 1, 2
# Codes returned by `alleles_at` besides base codes 0-3.
NO_ALLELE = -1  # read does not cover the position, or its base there is unusable
INDEL_ANCHOR = 10  # read has an indel anchored at the position (see the event table)


@numba.njit(cache=True, nogil=True)
def _is_match(op):
    return op == M or op == EQ or op == DIFF


@numba.njit(cache=True, nogil=True)
def count_alleles(
    win_start, win_end, ref, starts, cigar_op, cigar_len, cigar_offset, seq, qual, seq_offset,
    min_base_quality, ref_count, snp_count, ev_pos, ev_read, ev_kind, ev_len, ev_qpos,
):  # fmt: skip
    """Fill ref_count[pos], snp_count[pos, base] for pos in [win_start, win_end) and the indel events.

    `ref` holds reference base codes of [win_start, win_end). Returns the number of events written.
    """
    n_events = 0
    for r in range(len(starts)):
        pos = starts[r]
        qpos = seq_offset[r]
        c_end = cigar_offset[r + 1]
        for c in range(cigar_offset[r], c_end):
            op = cigar_op[c]
            length = cigar_len[c]
            if _is_match(op):
                next_op = cigar_op[c + 1] if c + 1 < c_end else -1
                for k in range(length):
                    p = pos + k
                    if p < win_start or p >= win_end:
                        continue
                    q = qpos + k
                    if k == length - 1 and (next_op == INS or next_op == DEL):
                        ilen = cigar_len[c + 1]
                        if qual[q] < min_base_quality or seq[q] == 4:
                            continue
                        if next_op == INS:
                            usable = True
                            for j in range(q + 1, q + 1 + ilen):
                                if qual[j] < min_base_quality or seq[j] == 4:
                                    usable = False
                            if not usable:
                                continue
                        ev_pos[n_events] = p
                        ev_read[n_events] = r
                        ev_kind[n_events] = KIND_INSERTION if next_op == INS else KIND_DELETION
                        ev_len[n_events] = ilen
                        ev_qpos[n_events] = q
                        n_events += 1
                        continue
                    b = seq[q]
                    if qual[q] < min_base_quality or b == 4:
                        continue
                    if b == ref[p - win_start]:
                        ref_count[p - win_start] += 1
                    else:
                        snp_count[p - win_start, b] += 1
                pos += length
                qpos += length
            elif op == INS or op == SOFT:
                qpos += length
            elif op == DEL or op == SKIP:
                pos += length
    return n_events


@numba.njit(cache=True, nogil=True)
def alleles_at(position, read_ids, starts, cigar_op, cigar_len, cigar_offset, seq, qual, seq_offset, min_base_quality):
    """Per read: its base code at `position`, INDEL_ANCHOR, or NO_ALLELE (same rules as count_alleles)."""
    out = np.full(len(read_ids), NO_ALLELE, dtype=np.int8)
    for i in range(len(read_ids)):
        r = read_ids[i]
        pos = starts[r]
        qpos = seq_offset[r]
        c_end = cigar_offset[r + 1]
        for c in range(cigar_offset[r], c_end):
            op = cigar_op[c]
            length = cigar_len[c]
            if _is_match(op):
                if pos <= position < pos + length:
                    k = position - pos
                    q = qpos + k
                    next_op = cigar_op[c + 1] if c + 1 < c_end else -1
                    if k == length - 1 and (next_op == INS or next_op == DEL):
                        out[i] = INDEL_ANCHOR
                    elif qual[q] >= min_base_quality and seq[q] != 4:
                        out[i] = seq[q]
                    break
                pos += length
                qpos += length
            elif op == INS or op == SOFT:
                qpos += length
            elif op == DEL or op == SKIP:
                pos += length
                if pos > position:
                    break
    return out


def indel_capacity(batch) -> int:
    """Upper bound on indel events: one per I or D operation."""
    return int(np.count_nonzero((batch.cigar_op == INS) | (batch.cigar_op == DEL)))
