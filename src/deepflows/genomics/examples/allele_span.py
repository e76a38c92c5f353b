"""The reference stretch a read must cover to tell an allele from the reference.

An indel in a homopolymer or tandem repeat can be placed anywhere along the repeat with the same
haplotype, so a read that ends inside the repeat reads the same whether or not it carries the indel: the
aligner writes it as reference. Such reads are what makes a hom-alt insertion look het, or a 1/2 site
look 0/1. The span runs from the last reference base before the leftmost placement to the first one after
the rightmost placement; a read covering both flanks is informative (GATK calls the others uninformative).
"""

from __future__ import annotations

import numpy as np

from deepflows.genomics.examples.readbatch import encode_bases


def allele_span(ref_codes: np.ndarray, offset: int, pos: int, ref: str, alt: str) -> tuple[int, int]:
    """Inclusive [lo, hi] reference positions a read must cover to show `alt` (at 0-based `pos`) or not.

    `ref_codes[i]` is the reference base code at position offset + i; repeats are followed only as far as
    `ref_codes` reaches.
    """
    r, a = encode_bases(ref), encode_bases(alt)
    while len(r) and len(a) and r[-1] == a[-1]:
        r, a = r[:-1], a[:-1]
    shared = 0
    while shared < min(len(r), len(a)) and r[shared] == a[shared]:
        shared += 1
    r, a, q = r[shared:], a[shared:], pos + shared
    if len(r) and len(a):  # substitution: only its own bases
        return q, q + len(r) - 1
    # An indel of `unit` at q (inserted before q, or deleting [q, stop)) moves one base left while the
    # base before it equals the unit's last base, rotating the unit; rightwards likewise from `stop`.
    unit, stop = (a, q) if len(a) else (r, q + len(r))
    k = len(unit)
    left = 0
    while q - 1 - left >= offset and ref_codes[q - 1 - left - offset] == unit[(-1 - left) % k]:
        left += 1
    right = 0
    while stop + right < offset + len(ref_codes) and ref_codes[stop + right - offset] == unit[right % k]:
        right += 1
    return q - left - 1, stop + right
