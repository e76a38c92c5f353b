"""Candidate variants from allele counts, with DeepVariant's thresholds.

An alt allele is a candidate when at least `min_count` reads support it and its share of the reads
counted at the position reaches `snp_fraction` (SNPs) or `indel_fraction` (insertions, deletions and
complex indel alleles). All candidate alleles at one position form one multi-allelic candidate whose
REF is the longest deleted sequence; shorter alleles are extended with the remaining reference bases.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from deepflows.genomics.examples import allele_counts as ac
from deepflows.genomics.examples.readbatch import BASES, ReadBatch


@dataclass(frozen=True)
class Thresholds:
    min_count: int = 2
    snp_fraction: float = 0.12
    indel_fraction: float = 0.06
    min_base_quality: int = 10
    min_mapping_quality: int = 5


@dataclass
class Candidate:
    contig: str
    start: int
    ref: str
    alts: tuple[str, ...]
    depth: int  # reads with a usable allele at the position
    allele_depth: tuple[int, ...]  # ref, then each alt
    supporters: list[np.ndarray] = field(repr=False)  # read ids (into the batch) supporting each alt

    @property
    def end(self) -> int:
        return self.start + len(self.ref)

    def alt_combinations(self) -> list[tuple[int, ...]]:
        """One example per alt, and one per pair of alts (for het-alt genotypes such as 1/2)."""
        n = len(self.alts)
        return [(i,) for i in range(n)] + [(i, j) for i in range(n) for j in range(i + 1, n)]


@dataclass
class WindowCounts:
    """Allele counts of every position of a window [start, start + width), as the candidate finder sees them;
    the gVCF's reference-confidence blocks are computed from the same counts."""

    start: int
    ref_count: np.ndarray  # [width] reads showing the reference base
    snp_count: np.ndarray  # [width, 4] reads showing each other base
    indels: dict[int, dict[tuple[str, str], list[int]]]  # position -> (ref, alt) -> supporting read ids
    total: np.ndarray  # [width] reads with a usable allele (ref, SNP or indel anchor): the depth


def count_window(batch: ReadBatch, win_start: int, win_end: int, ref_seq: str, ref_codes: np.ndarray, fetch_ref,
                 thresholds: Thresholds) -> WindowCounts:  # fmt: skip
    """Allele counts of [win_start, win_end).

    `ref_seq`/`ref_codes` cover the window; `fetch_ref(start, end)` returns reference bases anywhere
    on the contig (deletions may reach past the window).
    """
    width = win_end - win_start
    ref_count = np.zeros(width, dtype=np.int32)
    snp_count = np.zeros((width, 4), dtype=np.int32)
    capacity = ac.indel_capacity(batch)
    ev = {k: np.empty(capacity, dtype=np.int64) for k in ("pos", "read", "kind", "len", "qpos")}
    n_events = ac.count_alleles(
        win_start, win_end, ref_codes, batch.start, batch.cigar_op, batch.cigar_len, batch.cigar_offset,
        batch.seq, batch.qual, batch.seq_offset, thresholds.min_base_quality,
        ref_count, snp_count, ev["pos"], ev["read"], ev["kind"], ev["len"], ev["qpos"],
    )  # fmt: skip
    indels = _indel_alleles(batch, ev, n_events, ref_seq, win_start, fetch_ref)
    indel_total = np.zeros(width, dtype=np.int32)
    for pos, alleles in indels.items():
        indel_total[pos - win_start] = sum(len(reads) for reads in alleles.values())
    total = ref_count + snp_count.sum(axis=1) + indel_total
    return WindowCounts(win_start, ref_count, snp_count, indels, total)


def find_candidates(batch: ReadBatch, contig: str, counts: WindowCounts, ref_seq: str, ref_codes: np.ndarray,
                    thresholds: Thresholds) -> list[Candidate]:  # fmt: skip
    """Candidates starting in the window of `counts` (`ref_seq`/`ref_codes` cover that window)."""
    win_start, snp_count, total = counts.start, counts.snp_count, counts.total
    sites: dict[int, dict[tuple[str, str], np.ndarray | int]] = defaultdict(dict)
    passing = (snp_count >= thresholds.min_count) & (snp_count >= thresholds.snp_fraction * total[:, None])
    for offset, base in zip(*np.nonzero(passing)):
        if ref_codes[offset] == 4:
            continue
        sites[win_start + int(offset)][(ref_seq[offset], BASES[base])] = int(base)
    for pos, alleles in counts.indels.items():
        for allele, reads in alleles.items():
            n = len(reads)
            if n >= thresholds.min_count and n >= thresholds.indel_fraction * total[pos - win_start]:
                if ref_codes[pos - win_start] != 4:
                    sites[pos][allele] = np.asarray(reads, dtype=np.int64)

    candidates = []
    for pos in sorted(sites):
        candidates.append(_combine(batch, contig, pos, sites[pos], int(total[pos - win_start]),
                                   int(counts.ref_count[pos - win_start]), thresholds))  # fmt: skip
    return candidates


def _indel_alleles(batch, ev, n_events, ref_seq, win_start, fetch_ref) -> dict[int, dict[tuple[str, str], list[int]]]:
    """Group indel events by position into (ref, alt) alleles with their supporting read ids."""
    alleles: dict[int, dict[tuple[str, str], list[int]]] = defaultdict(lambda: defaultdict(list))
    seq = batch.seq
    for i in range(n_events):
        pos, read, kind, length, qpos = (int(ev[k][i]) for k in ("pos", "read", "kind", "len", "qpos"))
        anchor = BASES[seq[qpos]]
        if kind == ac.KIND_INSERTION:
            ref = ref_seq[pos - win_start]
            alt = anchor + "".join(BASES[b] for b in seq[qpos + 1 : qpos + 1 + length])
        else:
            ref = fetch_ref(pos, pos + 1 + length)
            alt = anchor
        alleles[pos][(ref, alt)].append(read)
    return alleles


def _combine(batch, contig, pos, alleles, depth, ref_depth, thresholds) -> Candidate:
    """One candidate from all passing (ref, alt) alleles at `pos`."""
    ref = max((r for r, _ in alleles), key=len)
    snp_reads = None
    extended: dict[str, tuple[int, np.ndarray]] = {}
    for (allele_ref, alt), support in alleles.items():
        if isinstance(support, int):  # a SNP: find the reads carrying that base here
            if snp_reads is None:
                snp_reads = batch.query_span(pos, pos + 1)
                codes = ac.alleles_at(
                    pos, snp_reads, batch.start, batch.cigar_op, batch.cigar_len, batch.cigar_offset,
                    batch.seq, batch.qual, batch.seq_offset, thresholds.min_base_quality,
                )  # fmt: skip
            support = snp_reads[codes == support]
        extended[alt + ref[len(allele_ref) :]] = support
    alts = tuple(sorted(extended))
    supporters = [extended[a] for a in alts]
    return Candidate(
        contig=contig,
        start=pos,
        ref=ref,
        alts=alts,
        depth=depth,
        allele_depth=(ref_depth, *(len(s) for s in supporters)),
        supporters=supporters,
    )
