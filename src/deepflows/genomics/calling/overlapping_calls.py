"""Haplotype-consistent genotypes for variant calls whose reference spans overlap.

Each site is genotyped on its own, so two overlapping calls can claim more alt alleles than a diploid
genome holds there: a heterozygous 17 bp deletion over a 3 bp deletion called 1/1 puts three alleles on
two haplotypes (the deleted haplotype cannot also carry the 3 bp deletion). As DeepVariant's
postprocess_variants does, such a group of calls gets the most likely joint genotypes whose alt alleles
never stack above two on any reference base; a consistent group is left as called.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

PLOIDY = 2
MAX_COMBINATIONS = 4096  # joint genotypes tried per group; a larger group is left as called


@dataclass
class Call:
    """One site's genotype options and the index of the chosen one; its span [start, end) in the contig."""

    contig: int
    start: int
    end: int
    genotypes: list[tuple[int, int]]
    probs: np.ndarray
    chosen: int


def _copies(genotype: tuple[int, int]) -> int:
    return sum(allele > 0 for allele in genotype)


def consistent(calls: list[Call], choice: tuple[int, ...]) -> bool:
    """Whether no reference base lies under more than PLOIDY alt alleles of the chosen genotypes."""
    for call in calls:
        stacked = sum(
            _copies(other.genotypes[g]) for other, g in zip(calls, choice) if other.start <= call.start < other.end
        )
        if stacked > PLOIDY:
            return False
    return True


def overlapping_groups(calls: list[Call]) -> list[list[Call]]:
    """Calls (sorted by contig and start) chained into groups of overlapping spans; singletons dropped."""
    groups: list[list[Call]] = []
    current: list[Call] = []
    end = -1
    for call in calls:
        if current and call.contig == current[0].contig and call.start < end:
            current.append(call)
            end = max(end, call.end)
            continue
        if len(current) > 1:
            groups.append(current)
        current, end = [call], call.end
    if len(current) > 1:
        groups.append(current)
    return groups


def resolve(calls: list[Call]) -> int:
    """Re-choose the genotypes of inconsistent overlapping groups in place; the number of calls changed."""
    changed = 0
    for group in overlapping_groups(calls):
        if consistent(group, tuple(c.chosen for c in group)):
            continue
        if math.prod(len(c.genotypes) for c in group) > MAX_COMBINATIONS:
            continue
        logs = [np.log(np.maximum(c.probs, 1e-300)) for c in group]
        best, best_score = None, -math.inf
        for choice in itertools.product(*(range(len(c.genotypes)) for c in group)):
            score = sum(float(log[g]) for log, g in zip(logs, choice))
            if score > best_score and consistent(group, choice):
                best, best_score = choice, score
        for call, g in zip(group, best):
            changed += call.chosen != g
            call.chosen = g
    return changed
