"""Variant records, VCF reading, normalisation (as `bcftools norm -f`) and confident regions.

Shared by truth labelling and benchmarking: both compare variants only after they are put into one
canonical form, because the same haplotype can be written in many ways (shifted indels, padding bases).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from deepflows.errors import UserError
from deepflows.tables import open_text

log = logging.getLogger(__name__)

# Reference bases fetched per step while shifting an indel along a repeat.
_SHIFT_BLOCK = 64


class ReferenceLike(Protocol):
    """What normalisation needs from a reference: `pysam.FastaFile` fits."""

    def fetch(self, reference: str, start: int, end: int) -> str: ...

    def get_reference_length(self, reference: str) -> int: ...


@dataclass(frozen=True, slots=True)
class Variant:
    """One VCF record. `start` is 0-based; `genotype` holds allele indices (0 = ref, i = alts[i-1])."""

    contig: str
    start: int
    ref: str
    alts: tuple[str, ...]
    genotype: tuple[int, ...] | None = None
    phased: bool = False

    @property
    def end(self) -> int:
        """0-based exclusive end of the reference span."""
        return self.start + len(self.ref)

    @property
    def alleles(self) -> tuple[str, ...]:
        return (self.ref, *self.alts)


def _is_symbolic(allele: str) -> bool:
    return allele.startswith("<") or "[" in allele or "]" in allele


class VcfReader:
    """Reads Variants (first sample's GT) from an indexed VCF/BCF, one region at a time.

    Skipped, and counted in `skipped_symbolic` / `skipped_filtered`:
    - records with a symbolic allele (`<DEL>`, breakends): their sequence is unknown;
    - records whose FILTER is not PASS or `.`, when `pass_only` (the truth sets' convention).
    A spanning-deletion allele `*` is dropped and genotype entries that pointed to it become 0: the
    deletion itself is another record, so this record leaves that haplotype unchanged. Missing genotype
    entries (`./1`) also become 0; a genotype with no called allele becomes None.
    """

    def __init__(self, path: str | Path, *, pass_only: bool = True):
        import pysam

        self.path = Path(path)
        self.pass_only = pass_only
        self.skipped_symbolic = 0
        self.skipped_filtered = 0
        try:
            self._file = pysam.VariantFile(str(self.path))
        except (OSError, ValueError) as err:
            raise UserError(f"{self.path}: cannot open as VCF/BCF ({err})") from err
        self._has_samples = len(self._file.header.samples) > 0

    @property
    def contigs(self) -> list[str]:
        """Contigs named in the header."""
        return list(self._file.header.contigs)

    def contig_lengths(self) -> dict[str, int | None]:
        """Contig lengths declared in the header (None where a `##contig` line gives none)."""
        return {name: contig.length for name, contig in self._file.header.contigs.items()}

    def fetch(self, contig: str, start: int | None = None, end: int | None = None) -> Iterator[Variant]:
        """Variants overlapping [start, end) on `contig` (0-based); the whole contig when no bounds."""
        if contig not in self._file.header.contigs:
            return
        for variant, _ in self._variants(contig, start, end):
            yield variant

    def fetch_with_filters(
        self, contig: str, start: int | None = None, end: int | None = None
    ) -> Iterator[tuple[Variant, tuple[str, ...]]]:
        """As `fetch`, each Variant with its record's FILTER names (`()` for `.`), e.g. to keep both PASS
        and filtered calls apart when the reader was opened with `pass_only=False`. A VCF without
        `##contig` lines is looked up in its index instead of its header."""
        if self._file.header.contigs and contig not in self._file.header.contigs:
            return
        yield from self._variants(contig, start, end)

    def _variants(self, contig, start, end) -> Iterator[tuple[Variant, tuple[str, ...]]]:
        try:
            records = self._file.fetch(contig, start, end)
        except ValueError as err:
            raise UserError(f"{self.path}: cannot fetch {contig}:{start}-{end}, is it indexed? ({err})") from err
        for record in records:
            variant = self._to_variant(record)
            if variant is not None:
                yield variant, tuple(record.filter.keys())

    def _to_variant(self, record) -> Variant | None:
        if self.pass_only and any(name != "PASS" for name in record.filter.keys()):
            self.skipped_filtered += 1
            return None
        alts = record.alts or ()
        if any(_is_symbolic(alt) for alt in alts):
            self.skipped_symbolic += 1
            return None
        kept = [i for i, alt in enumerate(alts, start=1) if alt != "*"]
        if alts and not kept:
            self.skipped_symbolic += 1
            return None
        new_index = {0: 0, **{old: new for new, old in enumerate(kept, start=1)}}
        genotype, phased = None, False
        if self._has_samples:
            call = record.samples[0]
            called = call.get("GT") or ()
            if any(a is not None for a in called):
                genotype = tuple(new_index.get(a, 0) for a in called)  # missing (None) -> 0
                phased = len(called) > 1 and bool(call.phased)  # htslib calls haploid GTs phased
        return Variant(
            contig=record.chrom,
            start=record.start,
            ref=record.ref.upper(),
            alts=tuple(alts[i - 1].upper() for i in kept),
            genotype=genotype,
            phased=phased,
        )

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> VcfReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_vcf(path: str | Path, contig: str, start: int | None = None, end: int | None = None) -> Iterator[Variant]:
    """Yield the PASS Variants of `path` overlapping [start, end) on `contig`; logs how many were skipped."""
    with VcfReader(path) as reader:
        yield from reader.fetch(contig, start, end)
        if reader.skipped_symbolic or reader.skipped_filtered:
            log.info(
                "%s %s:%s-%s: skipped %d symbolic and %d filtered records",
                path, contig, start, end, reader.skipped_symbolic, reader.skipped_filtered,
            )


def _check_ref(variant: Variant, fasta: ReferenceLike) -> None:
    expected = fasta.fetch(variant.contig, variant.start, variant.end).upper()
    if expected != variant.ref.upper():
        raise ValueError(
            f"REF {variant.ref} at {variant.contig}:{variant.start + 1} does not match the reference ({expected})"
        )


def normalize(variant: Variant, fasta: ReferenceLike) -> Variant:
    """Left-align and trim, as `bcftools norm -f` (and vt normalize) do; multi-allelic records jointly.

    Repeatedly drop a shared last base (extending one reference base to the left whenever an allele
    would become empty), then drop shared first bases while every allele keeps at least one base.
    The result keeps the anchor base of indels and the order of alts, so genotypes stay valid.
    Raises ValueError when REF does not match the reference.
    """
    _check_ref(variant, fasta)
    alleles = [a.upper() for a in variant.alleles]
    if len(set(alleles)) == 1:  # no alt, or alts equal to REF: nothing to align
        return replace(variant, ref=alleles[0], alts=tuple(alleles[1:]))
    start = variant.start
    left = ""  # reference bases just before `start`, fetched a block at a time
    while True:
        if all(alleles) and len({a[-1] for a in alleles}) == 1:
            alleles = [a[:-1] for a in alleles]
        elif all(alleles):
            break
        elif start > 0:
            if not left:
                left = fasta.fetch(variant.contig, max(0, start - _SHIFT_BLOCK), start).upper()
            base, left = left[-1], left[:-1]
            alleles = [base + a for a in alleles]
            start -= 1
        else:  # at the contig's first base VCF pads on the right instead
            end = start + len(alleles[0])
            base = fasta.fetch(variant.contig, end, end + 1).upper()
            alleles = [a + base for a in alleles]
            break
    while min(map(len, alleles)) >= 2 and len({a[0] for a in alleles}) == 1:
        alleles = [a[1:] for a in alleles]
        start += 1
    return replace(variant, start=start, ref=alleles[0], alts=tuple(alleles[1:]))


def ambiguous_span(variant: Variant, fasta: ReferenceLike) -> tuple[int, int]:
    """[start, end) covering every equivalent placement of the variant (an indel slid along its repeat).

    `variant` must be normalised (left-aligned); the end is found by shifting it right as far as it goes.
    Variants whose spans are near each other must be compared together as haplotypes.
    """
    alleles = list(variant.alleles)
    if len(set(alleles)) == 1 or len({len(a) for a in alleles}) == 1:
        return variant.start, variant.end  # substitutions do not slide
    contig_length = fasta.get_reference_length(variant.contig)
    end = variant.end
    right = ""  # reference bases just after `end`
    while True:
        if all(alleles) and len({a[0] for a in alleles}) == 1:
            alleles = [a[1:] for a in alleles]
        elif not all(alleles) and end < contig_length:
            if not right:
                right = fasta.fetch(variant.contig, end, min(contig_length, end + _SHIFT_BLOCK)).upper()
            base, right = right[0], right[1:]
            alleles = [a + base for a in alleles]
            end += 1
        else:
            break
    return variant.start, end


def split_multiallelic(variant: Variant) -> list[Variant]:
    """One biallelic record per alt, as `bcftools norm -m-` writes them (normalise each afterwards).

    Genotype entries keep their haplotype slot: an entry becomes 1 where it named this alt, else 0.
    So 1/2 gives 1/0 for the first alt and 0/1 for the second, and a phased 1|2 stays exact. For an
    unphased call the slots are arbitrary, so the split records no longer say that the two alts are
    on different haplotypes; compare multi-allelic truth as haplotypes, not split, when that matters.
    """
    if len(variant.alts) <= 1:
        return [variant]
    split = []
    for index, alt in enumerate(variant.alts, start=1):
        genotype = None if variant.genotype is None else tuple(int(a == index) for a in variant.genotype)
        split.append(replace(variant, alts=(alt,), genotype=genotype))
    return split


class Regions:
    """Merged intervals per contig (e.g. a confident-regions BED), queried with binary search."""

    def __init__(self, intervals: dict[str, list[tuple[int, int]]]):
        self._starts: dict[str, np.ndarray] = {}
        self._ends: dict[str, np.ndarray] = {}
        for contig, pairs in intervals.items():
            merged: list[list[int]] = []
            for start, end in sorted(pairs):
                if merged and start <= merged[-1][1]:  # overlapping or touching
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            array = np.asarray(merged, dtype=np.int64).reshape(-1, 2)
            self._starts[contig], self._ends[contig] = array[:, 0], array[:, 1]

    @classmethod
    def from_bed(cls, path: str | Path) -> Regions:
        """Load a BED (plain or gzipped); header, track and browser lines are ignored."""
        path = Path(path)
        intervals: dict[str, list[tuple[int, int]]] = {}
        try:
            with open_text(path) as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip() or line.startswith(("#", "track", "browser")):
                        continue
                    fields = line.split()
                    try:
                        contig, start, end = fields[0], int(fields[1]), int(fields[2])
                    except (IndexError, ValueError):
                        raise UserError(f"{path}:{number}: not a BED line (contig, start, end)") from None
                    if start > end or start < 0:
                        raise UserError(f"{path}:{number}: start {start} is after end {end} or negative")
                    intervals.setdefault(contig, []).append((start, end))
        except OSError as err:
            raise UserError(f"{path}: cannot read BED ({err})") from err
        return cls(intervals)

    @property
    def contigs(self) -> list[str]:
        return list(self._starts)

    def _first_ending_after(self, contig: str, position: int) -> tuple[int, np.ndarray, np.ndarray] | None:
        starts = self._starts.get(contig)
        if starts is None:
            return None
        ends = self._ends[contig]
        return int(np.searchsorted(ends, position, side="right")), starts, ends

    def contains(self, contig: str, start: int, end: int) -> bool:
        """Whether [start, end) lies inside one interval (intervals are merged, so one is enough)."""
        found = self._first_ending_after(contig, start)
        if found is None:
            return False
        i, starts, ends = found
        return i < len(starts) and starts[i] <= start and end <= ends[i]

    def overlaps_many(self, contig: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """`overlaps` for arrays of [start, end) intervals on one contig, as a boolean array."""
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        if contig not in self._starts:
            return np.zeros(len(starts), dtype=bool)
        region_starts, region_ends = self._starts[contig], self._ends[contig]
        i = np.searchsorted(region_ends, starts, side="right")
        inside = i < len(region_starts)
        result = np.zeros(len(starts), dtype=bool)
        result[inside] = (starts[inside] < ends[inside]) & (region_starts[i[inside]] < ends[inside])
        return result

    def overlaps(self, contig: str, start: int, end: int) -> bool:
        """Whether [start, end) shares at least one base with an interval."""
        found = self._first_ending_after(contig, start)
        if found is None:
            return False
        i, starts, _ = found
        return start < end and i < len(starts) and starts[i] < end
