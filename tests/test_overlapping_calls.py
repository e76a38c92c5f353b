"""Overlapping variant calls get haplotype-consistent genotypes: never more than two alt alleles on a base."""

from __future__ import annotations

import numpy as np
import pytest

from deepflows.genomics.calling.overlapping_calls import (
    MAX_COMBINATIONS,
    Call,
    consistent,
    overlapping_groups,
    resolve,
)

BIALLELIC = [(0, 0), (0, 1), (1, 1)]


def call(start: int, end: int, probs, contig: int = 0, genotypes=BIALLELIC) -> Call:
    probs = np.asarray(probs, dtype=np.float64)
    return Call(contig, start, end, list(genotypes), probs, int(np.argmax(probs)))


def test_het_deletion_over_a_hom_alt_deletion_becomes_two_hets():
    """The sim-eval case: a 17 bp het deletion (certain) over a 3 bp deletion called 1/1 at p 0.83."""
    big, small = call(100, 118, (0.001, 0.99, 0.009)), call(112, 116, (0.0, 0.17, 0.83))
    assert not consistent([big, small], (1, 2))
    assert resolve([big, small]) == 1
    assert (big.chosen, small.chosen) == (1, 1)  # 0/1 and 0/1: one deletion per haplotype


def test_cheaper_to_drop_the_uncertain_call():
    """When the overlapped call's het is unlikely, the joint optimum may make the other call hom-ref."""
    hom_del, snp = call(100, 110, (0.02, 0.03, 0.95)), call(105, 106, (0.001, 0.998, 0.001))
    assert resolve([hom_del, snp]) == 1
    # (1/1, 0/0): 0.95 * 0.001 < (0/1, 0/1): 0.03 * 0.998
    assert (hom_del.chosen, snp.chosen) == (1, 1)
    certain_del, weak_snp = call(100, 110, (0.0001, 0.0009, 0.999)), call(105, 106, (0.2, 0.6, 0.2))
    assert resolve([certain_del, weak_snp]) == 1
    assert (certain_del.chosen, weak_snp.chosen) == (2, 0)


def test_consistent_and_separate_calls_are_left_as_called():
    het_a, het_b = call(100, 110, (0.1, 0.8, 0.1)), call(105, 106, (0.1, 0.8, 0.1))  # one per haplotype
    apart = call(110, 111, (0.0, 0.0, 1.0))  # starts where the deletion's span ends
    other_contig = call(105, 106, (0.0, 0.0, 1.0), contig=1)
    calls = [het_a, het_b, apart, other_contig]
    assert resolve(calls) == 0
    assert [c.chosen for c in calls] == [1, 1, 2, 2]
    assert [[c.start for c in g] for g in overlapping_groups(calls)] == [[100, 105]]


def test_a_multiallelic_site_counts_both_of_its_alleles():
    genotypes = [(0, 0), (0, 1), (1, 1), (0, 2), (1, 2), (2, 2)]
    het_alt = call(200, 205, (0, 0, 0, 0, 0.9, 0.1), genotypes=genotypes)  # 1/2: both haplotypes
    snp = call(202, 203, (0.3, 0.6, 0.1))
    assert resolve([het_alt, snp]) == 1
    assert (het_alt.chosen, snp.chosen) == (4, 0)


def test_chained_groups_and_the_combination_limit():
    chain = [call(100 + 5 * i, 108 + 5 * i, (0.0, 0.0, 1.0)) for i in range(3)]  # each overlaps the next
    assert [len(g) for g in overlapping_groups(chain)] == [3]
    assert resolve(chain) == 1 and [c.chosen for c in chain] == [2, 0, 2]  # the middle one gives way
    n = int(np.ceil(np.log(MAX_COMBINATIONS + 1) / np.log(3)))
    too_many = [call(100, 200, (0.0, 0.0, 1.0)) for _ in range(n)]
    assert resolve(too_many) == 0 and all(c.chosen == 2 for c in too_many)


@pytest.mark.parametrize("choice, ok", [((0, 0, 0), True), ((2, 1, 0), False), ((1, 1, 0), True), ((1, 1, 1), False)])
def test_consistency_counts_alleles_on_every_base(choice, ok):
    calls = [call(0, 10, (1, 0, 0)), call(5, 6, (1, 0, 0)), call(2, 8, (1, 0, 0))]
    assert consistent(calls, choice) is ok
