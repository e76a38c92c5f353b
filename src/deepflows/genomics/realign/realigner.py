"""Local realignment, DeepVariant's way: assemble haplotypes where reads disagree with the reference, then
realign those reads to their best haplotype.

An aligner scores each read alone, so a long insertion in a repeat often comes out as several small
indels or a soft clip, a different one in each read, and no single allele gathers enough reads to be a
candidate. Here, per active window (active_windows.py): haplotypes are assembled from the reads
(debruijn.py) and aligned to the window's reference; each read whose alignment span is mostly in the
window is aligned, whole (soft clips included), to every haplotype padded with reference flanks
(align.py), scored only in a band around where its original alignment puts it. A read whose best
haplotype is not the reference and explains it strictly better than the reference does is traced back
and given the composed read -> haplotype -> reference alignment (unless nothing can change: a gapless
read on a gapless haplotype). All other reads keep their alignment byte for byte.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from deepflows.genomics.examples.allele_counts import DEL, DIFF, EQ, INS, SKIP, SOFT, M
from deepflows.genomics.examples.readbatch import ReadBatch, decode_bases, encode_bases
from deepflows.genomics.realign.active_windows import WindowParams, active_windows
from deepflows.genomics.realign.align import (
    DELETE,
    INSERT,
    MATCH,
    Scoring,
    align_pair,
    score_pair,
)
from deepflows.genomics.realign.debruijn import AssemblyParams, assemble

# CIGAR ops the realigner understands; reads with others (hard clips, skips, pads) keep their alignment.
_REALIGNABLE_OPS = (M, INS, DEL, SOFT, EQ, DIFF)
_QUERY_OPS = (M, INS, SOFT, EQ, DIFF)
_ON_REFERENCE = np.isin(np.arange(16), (M, DEL, SKIP, EQ, DIFF))  # per CIGAR op: whether it consumes the reference


@dataclass(frozen=True)
class RealignerParams:
    windows: WindowParams = field(default_factory=WindowParams)
    assembly: AssemblyParams = field(default_factory=AssemblyParams)
    scoring: Scoring = field(default_factory=Scoring)
    # Haplotype vs reference: the read scoring at twice the scale but with a gap opening (9) cheaper than a
    # mismatch (8 + the match it loses), so that several insertions in a repeat are spelled as themselves,
    # not as fewer, longer ones plus mismatches (alleles only reads spanning all of them support). Runs of up
    # to three mismatches (MNPs) still cost no more than a deletion plus an insertion, and stay mismatches.
    placement: Scoring = field(default_factory=lambda: Scoring(match=2, mismatch=8, gap_open=9, gap_extend=2))
    # Reference added beyond each end of a read when aligning it to the padded haplotypes.
    flank_slop: int = 20
    # Reads are scored against a haplotype in a band of diagonals around where their original alignment
    # puts them: this many bases either way, plus the haplotype's inserted and deleted bases.
    band_slop: int = 20


@dataclass
class _Alignment:
    start: int
    ops: list[int]
    lens: list[int]


def realign_reads(batch: ReadBatch, ref_codes: np.ndarray, ref_offset: int,
                  params: RealignerParams | None = None) -> ReadBatch:  # fmt: skip
    """A new ReadBatch, sorted by start, with reads in active windows realigned to assembled haplotypes.

    `ref_codes` are the reference base codes of [ref_offset, ref_offset + len(ref_codes)); windows whose
    reads reach beyond it are left alone.
    """
    params = params or RealignerParams()
    check_batch(batch)
    ref_end = ref_offset + len(ref_codes)
    windows = active_windows(batch, ref_codes, ref_offset, params.windows)
    spans = _read_spans(batch)
    owner = _owning_window(batch, windows, spans)
    realigned: dict[int, _Alignment] = {}
    for w, (ws, we) in enumerate(windows):
        members = np.flatnonzero(owner == w)
        if len(members) == 0:
            continue
        lo = int(spans[members, 0].min()) - params.flank_slop
        hi = int(spans[members, 1].max()) + params.flank_slop
        if lo < ref_offset or hi > ref_end:
            continue  # too close to the edge of the fetched reference (make-examples fetches a margin)
        # The assembly may widen the window by up to max_k bases each side (see debruijn.assemble).
        around = max(ws - params.assembly.max_k, ref_offset)
        ref_text = decode_bases(ref_codes[around - ref_offset : min(we + params.assembly.max_k, ref_end) - ref_offset])
        overlapping = batch.query_span(ws, we)
        reads = [(decode_bases(_read_seq(batch, r)), _read_qual(batch, r)) for r in overlapping]
        assembly = assemble(ref_text, (ws - around, we - around), reads, params.assembly)
        if len(assembly.haplotypes) == 1:
            continue
        hs, he = around + assembly.start, around + assembly.end
        window_ref = ref_codes[hs - ref_offset : he - ref_offset]
        placed = [_place_haplotype(encode_bases(h), window_ref, hs, params.placement) for h in assembly.haplotypes]
        # Only reads reaching where some haplotype differs from the reference can tell them apart.
        dlo, dhi = _differing_span(assembly.haplotypes, hs)
        informative = members[(spans[members, 0] < dhi + 1) & (spans[members, 1] > dlo - 1)]
        realigned.update(_realign_window(batch, informative, spans, placed, ref_codes, ref_offset, hs, he, params))
    return _rebuild(batch, realigned)


def check_batch(batch: ReadBatch) -> None:
    """Refuse a batch whose flat arrays do not describe the same reads (a bug upstream, never data to guess at)."""
    n = len(batch.start)
    sizes = {"end": len(batch.end), "mapq": len(batch.mapq), "reverse": len(batch.reverse), "tlen": len(batch.tlen),
             "name": len(batch.name), "read_number": len(batch.read_number),
             "cigar_offset": len(batch.cigar_offset) - 1, "seq_offset": len(batch.seq_offset) - 1}  # fmt: skip
    wrong = [k for k, v in sizes.items() if v != n]
    if wrong:
        raise ValueError(f"ReadBatch of {n} reads has arrays of other lengths: {', '.join(wrong)}")
    if n == 0:
        return
    if batch.cigar_offset[-1] != len(batch.cigar_op) or len(batch.cigar_len) != len(batch.cigar_op):
        raise ValueError("ReadBatch: cigar_offset does not match the CIGAR arrays")
    if batch.seq_offset[-1] != len(batch.seq) or len(batch.qual) != len(batch.seq):
        raise ValueError("ReadBatch: seq_offset does not match the sequence and quality arrays")
    if np.any(np.diff(batch.start) < 0):
        raise ValueError("ReadBatch: reads are not sorted by start")
    read_of_op = np.repeat(np.arange(n), np.diff(batch.cigar_offset))
    consumed = np.bincount(read_of_op, weights=np.isin(batch.cigar_op, _QUERY_OPS) * batch.cigar_len, minlength=n)
    bad = np.flatnonzero(consumed != np.diff(batch.seq_offset))
    if len(bad):
        raise ValueError(f"ReadBatch: read {batch.name[bad[0]]}: CIGAR length differs from its sequence length")


def _read_seq(batch: ReadBatch, r: int) -> np.ndarray:
    return batch.seq[batch.seq_offset[r] : batch.seq_offset[r + 1]]


def _read_qual(batch: ReadBatch, r: int) -> np.ndarray:
    return batch.qual[batch.seq_offset[r] : batch.seq_offset[r + 1]]


def _read_spans(batch: ReadBatch) -> np.ndarray:
    """[n, 2]: reference span of each read with its soft clips laid out on the reference."""
    spans = np.stack([batch.start, batch.end], axis=1).astype(np.int64)
    first, last = batch.cigar_offset[:-1], batch.cigar_offset[1:] - 1
    some = np.flatnonzero(last >= first)
    head = some[batch.cigar_op[first[some]] == SOFT]
    spans[head, 0] -= batch.cigar_len[first[head]]
    tail = some[(last[some] > first[some]) & (batch.cigar_op[last[some]] == SOFT)]
    spans[tail, 1] += batch.cigar_len[last[tail]]
    return spans


def _owning_window(batch: ReadBatch, windows: list[tuple[int, int]], spans: np.ndarray) -> np.ndarray:
    """Per read: the window its span overlaps most (the first of equals), -1 for none or an unrealignable CIGAR.
    Each read is realigned at most once, so two windows never fight over it. The span counts the soft clips
    (`_read_spans`): a read whose clipped end holds a window's insertion belongs to that window, even when more
    of its aligned bases lie in another."""
    owner = np.full(len(batch), -1, dtype=np.int64)
    overlap = np.zeros(len(batch), dtype=np.int64)
    clipped = int(np.max(spans[:, 1] - spans[:, 0] - (batch.end - batch.start))) if len(batch) else 0
    for w, (ws, we) in enumerate(windows):
        idx = batch.query_span(ws - clipped, we + clipped)
        size = np.minimum(spans[idx, 1], we) - np.maximum(spans[idx, 0], ws)
        better = size > overlap[idx]
        owner[idx[better]] = w
        overlap[idx[better]] = size[better]
    foreign = ~np.isin(batch.cigar_op, _REALIGNABLE_OPS)
    read_of_op = np.repeat(np.arange(len(batch)), np.diff(batch.cigar_offset))
    owner[np.bincount(read_of_op[foreign], minlength=len(batch)) > 0] = -1
    return owner


@dataclass
class _Haplotype:
    codes: np.ndarray
    ref_pos: np.ndarray  # per haplotype base: its reference position, -1 where the haplotype inserts
    gaps: int  # bases the haplotype inserts or deletes relative to the reference


def _place_haplotype(codes: np.ndarray, window_ref: np.ndarray, ws: int, scoring: Scoring) -> _Haplotype:
    """Global alignment to the window's reference (indels come out left-aligned)."""
    _, _, _, _, moves = align_pair(codes, window_ref, scoring, glocal=False)
    ref_pos = np.full(len(codes), -1, dtype=np.int64)
    i, j = 0, ws
    for move in moves:
        if move == MATCH:
            ref_pos[i] = j
            i, j = i + 1, j + 1
        elif move == INSERT:
            i += 1
        else:
            j += 1
    inserted = int(np.count_nonzero(ref_pos < 0))
    return _Haplotype(codes, ref_pos, inserted + len(window_ref) - (len(codes) - inserted))


def _differing_span(haplotypes: list[str], hs: int) -> tuple[int, int]:
    """Reference interval outside of which every haplotype equals the reference (haplotypes[0]): for each
    haplotype, from where its common suffix with the reference starts to where its common prefix ends, so
    that an indel in a repeat covers the whole repeat, wherever the aligner placed it."""
    ref = haplotypes[0]
    lo, hi = len(ref), 0
    for hap in haplotypes[1:]:
        prefix = len(os.path.commonprefix([ref, hap]))
        suffix = len(os.path.commonprefix([ref[::-1], hap[::-1]]))
        lo = min(lo, prefix, len(ref) - suffix)
        hi = max(hi, prefix, len(ref) - suffix)
    return hs + lo, hs + hi


def _realign_window(batch, reads, spans, haplotypes, ref_codes, ref_offset, hs, he, params) -> dict[int, _Alignment]:
    """Reads scored against every haplotype; the diploid pair of haplotypes that explains them best is
    chosen (this drops recombinant paths of the graph), and each read goes through its better haplotype of
    the pair when that one is not the reference and beats the reference (only then is it traced back)."""
    targets = []
    scores = np.zeros((len(reads), len(haplotypes)), dtype=np.int64)
    for row, r in enumerate(reads.tolist()):
        seq = _read_seq(batch, r)
        lo = min(int(spans[r, 0]) - params.flank_slop, hs)
        hi = max(int(spans[r, 1]) + params.flank_slop, he)
        per_haplotype = []
        for h, hap in enumerate(haplotypes):
            target = np.concatenate([ref_codes[lo - ref_offset : hs - ref_offset], hap.codes,
                                     ref_codes[he - ref_offset : hi - ref_offset]])  # fmt: skip
            target_ref = np.concatenate([np.arange(lo, hs), hap.ref_pos, np.arange(he, hi)])
            expected = int(np.argmax(target_ref >= spans[r, 0]))  # where the read's first base should go
            half = params.band_slop + hap.gaps
            # Only the band's columns: the traceback (align_pair, unbanded) is then confined to them too.
            a, b = max(expected - half, 0), expected + half + len(seq)
            band = (expected - half - a, expected + half - a)
            scores[row, h] = score_pair(seq, target[a:b], params.scoring, glocal=True, band=band)
            per_haplotype.append((target[a:b], target_ref[a:b]))
        targets.append(per_haplotype)
    pair = _best_pair(scores)
    out = {}
    for row, r in enumerate(reads.tolist()):
        h = pair[0] if scores[row, pair[0]] >= scores[row, pair[1]] else pair[1]
        if h == 0 or scores[row, h] <= scores[row, 0]:
            continue
        if haplotypes[h].gaps == 0 and _plain_match(batch, r):
            continue  # gapless on a gapless haplotype: its alignment only gains matches, in the same place
        target, target_ref = targets[row][h]
        alignment = align_pair(_read_seq(batch, r), target, params.scoring, glocal=True)
        new = _compose(len(_read_seq(batch, r)), alignment, target_ref)
        if new is not None:
            out[r] = new
    return out


def _plain_match(batch: ReadBatch, r: int) -> bool:
    return batch.cigar_offset[r + 1] - batch.cigar_offset[r] == 1 and batch.cigar_op[batch.cigar_offset[r]] == M


def _best_pair(scores: np.ndarray) -> tuple[int, int]:
    """(a, b), a <= b: the haplotype pair maximising the sum over reads of the better score; ties go to
    the lexicographically first pair, so the reference (index 0) wins when nothing beats it."""
    best, best_total = (0, 0), None
    for a in range(scores.shape[1]):
        for b in range(a, scores.shape[1]):
            total = int(np.maximum(scores[:, a], scores[:, b]).sum())
            if best_total is None or total > best_total:
                best, best_total = (a, b), total
    return best


def _compose(read_length: int, alignment, target_ref: np.ndarray) -> _Alignment | None:
    """Read -> haplotype moves and haplotype -> reference positions -> reference start and CIGAR.

    Each read base gets a reference position (or none: clipped, or inserted in the read or the haplotype);
    gaps between consecutive positions are deletions. Unplaced bases at the ends become soft clips.
    """
    _, q_start, _, t_start, moves = alignment
    on_query, on_target = moves != DELETE, moves != INSERT
    q = q_start + np.cumsum(on_query) - on_query  # the query and target index of each move
    t = t_start + np.cumsum(on_target) - on_target
    matched = moves == MATCH
    ref_of_base = np.full(read_length, -1, dtype=np.int64)
    ref_of_base[q[matched]] = target_ref[t[matched]]
    placed = np.flatnonzero(ref_of_base >= 0)
    if len(placed) == 0:
        return None  # the read lies inside an inserted sequence: nothing anchors it to the reference
    first, last = int(placed[0]), int(placed[-1])
    # Per read base from first to last: M, or I when unplaced; a jump between consecutive placed bases
    # is a deletion before the later one.
    pos = ref_of_base[placed]
    per_base = np.full(last + 1 - first, INS, dtype=np.int64)
    per_base[placed - first] = M
    deleted = np.zeros(last + 1 - first, dtype=np.int64)
    deleted[placed[1:] - first] = np.maximum(np.diff(pos) - 1, 0)
    ops: list[int] = []
    lens: list[int] = []
    if first:
        ops, lens = [SOFT], [first]
    # Runs: a new run starts at each deletion and at each change of op.
    starts = np.flatnonzero((deleted > 0) | np.concatenate([[True], per_base[1:] != per_base[:-1]]))
    ends = np.concatenate([starts[1:], [len(per_base)]])
    for a, b in zip(starts.tolist(), ends.tolist()):
        if deleted[a]:
            ops.append(DEL)
            lens.append(int(deleted[a]))
        if ops and ops[-1] == per_base[a]:
            lens[-1] += b - a
        else:
            ops.append(int(per_base[a]))
            lens.append(b - a)
    if last + 1 < read_length:
        ops.append(SOFT)
        lens.append(read_length - 1 - last)
    return _Alignment(int(ref_of_base[first]), ops, lens)


def _rebuild(batch: ReadBatch, realigned: dict[int, _Alignment]) -> ReadBatch:
    """A new batch with the realigned reads' starts, ends and CIGARs, re-sorted by start (stable)."""
    starts, ends = batch.start.copy(), batch.end.copy()
    # The new CIGARs go after the old ones; each read's CIGAR is the (start, count) of its run there.
    cigar_start, cigar_count = batch.cigar_offset[:-1].copy(), np.diff(batch.cigar_offset)
    new_ops, new_lens = [batch.cigar_op], [batch.cigar_len]
    appended = len(batch.cigar_op)
    for r, alignment in realigned.items():
        ops, lens = np.asarray(alignment.ops, dtype=np.int8), np.asarray(alignment.lens, dtype=np.int32)
        starts[r] = alignment.start
        ends[r] = alignment.start + int(lens[_ON_REFERENCE[ops]].sum())
        cigar_start[r], cigar_count[r] = appended, len(ops)
        appended += len(ops)
        new_ops.append(ops)
        new_lens.append(lens)
    order = np.argsort(starts, kind="stable")
    cigar = _runs(cigar_start[order], cigar_count[order])
    seq_counts = np.diff(batch.seq_offset)[order]
    seq = _runs(batch.seq_offset[:-1][order], seq_counts)
    return ReadBatch(
        start=starts[order],
        end=ends[order],
        mapq=batch.mapq[order],
        reverse=batch.reverse[order],
        tlen=batch.tlen[order],
        cigar_op=np.concatenate(new_ops)[cigar].astype(np.int8, copy=False),
        cigar_len=np.concatenate(new_lens)[cigar].astype(np.int32, copy=False),
        cigar_offset=np.concatenate([[0], np.cumsum(cigar_count[order])]).astype(np.int64),
        seq=batch.seq[seq],
        qual=batch.qual[seq],
        seq_offset=np.concatenate([[0], np.cumsum(seq_counts)]).astype(np.int64),
        name=[batch.name[r] for r in order],
        read_number=batch.read_number[order],
    )


def _runs(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The indices starts[0] .. starts[0] + counts[0] - 1, then those of the next run, and so on."""
    total = int(counts.sum())
    run_begin = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return np.repeat(starts.astype(np.int64) - run_begin, counts) + np.arange(total, dtype=np.int64)
