"""Compare truth and candidate variants as haplotype sequences, cluster by cluster (the vcfeval idea).

Two call sets can describe the same sample with different records (an MNP or two SNPs, a deletion
anywhere along its repeat, a multi-allelic site or two records). Normalisation removes the simplest
differences; the rest are settled by applying each set's alleles to the reference of a small window and
comparing the resulting sequences. Truth labelling and benchmarking both build on this module.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from deepflows.genomics.io.variants import ReferenceLike, Variant, normalize, split_multiallelic

log = logging.getLogger(__name__)

Genotype = tuple[int, int]
# One biallelic allele in canonical form: (start, ref, alt) after splitting and normalising.
AlleleKey = tuple[int, str, str]
# A change to the reference: (start, ref, alt), 0-based.
Edit = tuple[int, str, str]

HOM_REF: Genotype = (0, 0)


def cluster_by_span(spans: Sequence[tuple[int, int]], max_gap: int) -> list[list[int]]:
    """Group the indices of [start, end) spans lying within `max_gap` bases of each other, transitively.

    Clusters come out in genome order, each listing its indices by span start.
    """
    clusters: list[list[int]] = []
    cluster_end = 0
    for index in sorted(range(len(spans)), key=lambda i: spans[i]):
        start, end = spans[index]
        if clusters and start - cluster_end <= max_gap:
            clusters[-1].append(index)
            cluster_end = max(cluster_end, end)
        else:
            clusters.append([index])
            cluster_end = end
    return clusters


def diploid(genotype: Sequence[int]) -> Genotype:
    """A genotype as two alleles: a haploid call (male chrX/Y) counts as homozygous."""
    if len(genotype) == 1:
        return genotype[0], genotype[0]
    if len(genotype) == 2:
        return genotype[0], genotype[1]
    raise ValueError(f"genotype {genotype} has ploidy {len(genotype)}; only haploid and diploid are supported")


def apply_edits(ref_seq: str, window_start: int, edits: Sequence[Edit]) -> str | None:
    """The window's sequence after `edits` (sorted by start), or None when two edits overlap."""
    parts = []
    cursor = window_start
    for start, ref, alt in edits:
        if start < cursor:
            return None
        parts += [ref_seq[cursor - window_start : start - window_start], alt]
        cursor = start + len(ref)
    parts.append(ref_seq[cursor - window_start :])
    return "".join(parts)


def _edit(variant: Variant, allele: int) -> Edit:
    return variant.start, variant.ref, variant.alts[allele - 1]


def haplotype_pairs(ref_seq: str, window_start: int, variants: Sequence[Variant]) -> set[tuple[str, str]]:
    """Every (sorted) pair of window sequences the variants' genotypes allow, phasing ignored.

    Each het is tried on either haplotype (the first one fixed, since swapping all changes nothing);
    pairs in which alleles on one haplotype overlap are impossible and left out.
    """
    ordered = sorted(variants, key=lambda v: v.start)
    genotypes = [diploid(v.genotype) for v in ordered]
    hets = [i for i, (a, b) in enumerate(genotypes) if a != b]
    pairs = set()
    for flips in itertools.product((False, True), repeat=max(len(hets) - 1, 0)):
        flipped = {i for i, flip in zip(hets[1:], flips) if flip}
        haplotypes: tuple[list[Edit], list[Edit]] = ([], [])
        for i, (variant, (a, b)) in enumerate(zip(ordered, genotypes)):
            for haplotype, allele in zip(haplotypes, (b, a) if i in flipped else (a, b)):
                if allele:
                    haplotype.append(_edit(variant, allele))
        first, second = (apply_edits(ref_seq, window_start, edits) for edits in haplotypes)
        if first is not None and second is not None:
            pairs.add((first, second) if first <= second else (second, first))
    return pairs


def _paths_to_targets(
    ref_seq: str, window_start: int, candidates: Sequence[Variant], targets: Collection[str]
) -> dict[str, list[tuple[int, ...]]]:
    """For each target sequence, the allele choices (one per candidate) that spell it.

    Depth-first over candidates in start order; a branch is cut as soon as the sequence fixed so far
    (up to the next candidate's start) is no prefix of any target, which keeps the search small.
    """
    found: dict[str, list[tuple[int, ...]]] = defaultdict(list)
    sorted_targets = sorted(targets)

    def is_prefix_of_a_target(text: str) -> bool:
        # In sorted order, the first target not below `text` starts with it if any target does.
        i = bisect.bisect_left(sorted_targets, text)
        return i < len(sorted_targets) and sorted_targets[i].startswith(text)

    def visit(i: int, text: str, cursor: int, path: tuple[int, ...]) -> None:
        if i == len(candidates):
            sequence = text + ref_seq[cursor - window_start :]
            if sequence in targets:
                found[sequence].append(path)
            return
        candidate = candidates[i]
        next_start = candidates[i + 1].start if i + 1 < len(candidates) else cursor
        for allele in range(len(candidate.alts) + 1):
            new_text, new_cursor = text, cursor
            if allele:
                if candidate.start < cursor:  # overlaps an allele already on this haplotype
                    continue
                skipped = ref_seq[cursor - window_start : candidate.start - window_start]
                new_text = text + skipped + candidate.alts[allele - 1]
                new_cursor = candidate.end
            fixed = new_text + ref_seq[new_cursor - window_start : max(new_cursor, next_start) - window_start]
            if is_prefix_of_a_target(fixed):
                visit(i + 1, new_text, new_cursor, (*path, allele))

    visit(0, "", window_start, ())
    return found


def genotypes_reproducing(
    ref_seq: str,
    window_start: int,
    truth_pairs: Collection[tuple[str, str]],
    candidates: Sequence[Variant],
    preferred: Collection[tuple[int, int]] = (),
) -> list[Genotype] | None:
    """Candidate genotypes whose two haplotypes equal one of `truth_pairs`, or None when none do.

    Among several solutions the one using most `preferred` (candidate index, allele) pairs wins (e.g.
    alleles equal to a truth allele), then the one with fewest alt alleles, then the one whose alt alleles
    sit on the earliest candidates in the given order (left-aligned spellings first).
    """
    order = sorted(range(len(candidates)), key=lambda i: candidates[i].start)
    targets = {sequence for pair in truth_pairs for sequence in pair}
    paths = _paths_to_targets(ref_seq, window_start, [candidates[i] for i in order], targets)
    best: tuple[tuple, list[Genotype]] | None = None
    for first, second in truth_pairs:
        for path1, path2 in itertools.product(paths.get(first, ()), paths.get(second, ())):
            genotypes: list[Genotype] = [HOM_REF] * len(candidates)
            for index, a, b in zip(order, path1, path2):
                genotypes[index] = (a, b) if a <= b else (b, a)
            used = [(i, allele) for i, genotype in enumerate(genotypes) for allele in genotype if allele]
            score = (-sum(pair in preferred for pair in used), len(used), [i for i, _ in used], genotypes)
            if best is None or score < best[0]:
                best = (score, genotypes)
    return None if best is None else best[1]


def allele_keys(variant: Variant, fasta: ReferenceLike) -> list[AlleleKey]:
    """The canonical (start, ref, alt) of each alt, in alt order: split, then normalise each alone."""
    keys = []
    for biallelic in split_multiallelic(variant):
        normalized = normalize(biallelic, fasta)
        keys.append((normalized.start, normalized.ref, normalized.alts[0]))
    return keys


def allele_exact_genotypes(
    truth_keys: Sequence[Sequence[AlleleKey]],
    truth_genotypes: Sequence[Genotype],
    candidate_keys: Sequence[Sequence[AlleleKey]],
) -> tuple[list[Genotype], bool]:
    """Genotypes from matching canonical alleles one to one; and whether every truth allele was matched.

    A candidate allele equal to a truth allele takes that allele's copy number in the truth genotype;
    when two candidates carry the same allele only the first takes it, so no copy is counted twice.
    """
    copies: Counter[AlleleKey] = Counter()
    for keys, genotype in zip(truth_keys, truth_genotypes):
        copies.update(keys[allele - 1] for allele in genotype if allele)
    claimed: set[AlleleKey] = set()
    genotypes: list[Genotype] = []
    for keys in candidate_keys:
        alleles: list[int] = []
        for allele, key in enumerate(keys, start=1):
            if key in copies and key not in claimed:
                claimed.add(key)
                alleles += [allele] * copies[key]
        a, b = sorted((alleles + [0, 0])[:2])
        genotypes.append((a, b))
    return genotypes, claimed == set(copies)


Method = Literal["exact", "haplotype", "unresolved"]


@dataclass(frozen=True, slots=True)
class ClusterMatch:
    """Per-candidate genotypes for one cluster, and how they were found.

    exact: every truth allele has an identical candidate allele (also: no truth variant at all);
    haplotype: found by haplotype comparison; unresolved: neither worked (or the cluster was too large
    to search), so only allele-exact matches count and unmatched truth alleles are ignored.
    """

    genotypes: list[Genotype]
    method: Method


def match_cluster(
    truth: Sequence[Variant], candidates: Sequence[Variant], fasta: ReferenceLike, *, max_variants: int = 12
) -> ClusterMatch:
    """Genotype `candidates` (normalised, one cluster) so that they reproduce the `truth` genotypes.

    Haplotype search is exponential in the cluster size, so beyond `max_variants` truth variants or
    candidates the cluster falls back to allele-exact matching with a warning.
    """
    if not truth:
        return ClusterMatch([HOM_REF] * len(candidates), "exact")
    truth_genotypes = [diploid(v.genotype) for v in truth]
    truth_keys = [allele_keys(v, fasta) for v in truth]
    candidate_keys = [allele_keys(v, fasta) for v in candidates]
    exact, all_matched = allele_exact_genotypes(truth_keys, truth_genotypes, candidate_keys)
    if all_matched:
        return ClusterMatch(exact, "exact")
    if len(truth) > max_variants or len(candidates) > max_variants:
        first = min((*truth, *candidates), key=lambda v: v.start)
        log.warning(
            "cluster at %s:%d has %d truth variants and %d candidates (more than %d): allele-exact matching only",
            first.contig, first.start + 1, len(truth), len(candidates), max_variants,
        )
        return ClusterMatch(exact, "unresolved")
    window_start = min(v.start for v in (*truth, *candidates))
    window_end = max(v.end for v in (*truth, *candidates))
    ref_seq = fasta.fetch(truth[0].contig, window_start, window_end).upper()
    truth_alleles = {keys[a - 1] for keys, genotype in zip(truth_keys, truth_genotypes) for a in genotype if a}
    preferred = {
        (i, allele)
        for i, keys in enumerate(candidate_keys)
        for allele, key in enumerate(keys, start=1)
        if key in truth_alleles
    }
    pairs = haplotype_pairs(ref_seq, window_start, truth)
    genotypes = genotypes_reproducing(ref_seq, window_start, pairs, candidates, preferred)
    if genotypes is None:
        return ClusterMatch(exact, "unresolved")
    return ClusterMatch(genotypes, "haplotype")
