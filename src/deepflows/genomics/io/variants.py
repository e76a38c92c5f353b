"""Variant records, VCF reading, normalisation (as `bcftools norm -f`) and confident regions.

Shared by truth labelling and benchmarking: both compare variants only after they are put into one
canonical form, because the same haplotype can be written in many ways (shifted indels, padding bases).
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from deepflows.errors import UserError, abbreviated
from deepflows.genomics.io.hts import check_index_age, htslib_call, not_bgzip
from deepflows.inputs import check_bgzf_eof, compression, require_file

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


_BASES = re.compile(r"[ACGTNRYKMSWBDHV]+", re.IGNORECASE)  # IUPAC codes too: some references have them


def _allele_problem(ref: str, alts: Iterable[str]) -> str | None:
    """Why REF or an ALT is not an allele (htslib takes any text), if it is not."""
    if not _BASES.fullmatch(ref):
        return f"REF '{ref}' is not a sequence of bases"
    bad = [alt for alt in alts if alt != "*" and not _is_symbolic(alt) and not _BASES.fullmatch(alt)]
    return f"ALT '{bad[0]}' is not a sequence of bases" if bad else None


# ------------------------------------------------------------------------------------------ opening VCFs

_RECORD_BATCH = 512  # records read per hold of htslib's stderr


def vcf_index(path: Path) -> Path | None:
    """PATH.tbi or PATH.csi when present; refused when older than the VCF."""
    for ext, command in ((".tbi", "tabix -p vcf"), (".csi", "bcftools index")):
        index = Path(f"{path}{ext}")
        if index.exists():
            check_index_age(path, index, f"{command} {path}")
            return index
    return None


def open_variant_file(path: str | Path, *, indexed: bool):
    """pysam.VariantFile of a VCF or BCF; every failure is one line: gzip that is not bgzip, no index (when
    `indexed`), an index that is older than the file or unreadable (the index named), a bad header."""
    import pysam

    path = require_file(path, "VCF")
    is_gzip, is_bgzf = compression(path)
    if is_gzip and not is_bgzf:
        raise UserError(not_bgzip(path))
    if is_bgzf:
        check_bgzf_eof(path, "VCF/BCF")
    index = vcf_index(path)
    if indexed and index is None:
        raise UserError(f"{path}: no index; make one with `tabix -p vcf {path}`"
                        + ("" if is_bgzf else " after compressing it with `bgzip`"))  # fmt: skip
    with htslib_call(path, "cannot open as VCF/BCF", explain=lambda why: _header_problem(path, why)) as held:
        vcf = pysam.VariantFile(str(path))
        if index is not None and vcf.index is None:  # htslib only says so on stderr
            vcf.close()
            command = "tabix -p vcf" if index.suffix == ".tbi" else "bcftools index"
            raise UserError(f"{index}: cannot be loaded as the index of {path} ({held.diagnosis() or 'unreadable'}); "
                            f"rebuild it with `{command} {path}`")  # fmt: skip
    return vcf


def _header_problem(path: Path, diagnosis: str) -> str | None:
    """For a file htslib cannot open: a text file that does not start as a VCF does (pysam only says "invalid
    file ... is it VCF/BCF format?"), or another binary format."""
    from deepflows.tables import read_lines

    try:
        first = next(read_lines(path), (1, ""))[1]
    except UserError:  # binary: BCF or not
        first = None
    if first is not None and not first.startswith("##fileformat=VCF"):
        return f"{path}: line 1: not a VCF header (a VCF starts with ##fileformat=VCFv4.x); got {first.strip()[:40]!r}"
    return f"{path}: not a VCF or BCF file" if diagnosis.startswith("invalid file") else None


def genotype_sample(vcf, path, sample: str | None = None) -> int:
    """Index of the one sample whose genotypes are read: `sample`, or the only one. A sites-only VCF has no
    genotypes, and taking the first of several samples unasked can score or label the wrong one."""
    samples = list(vcf.header.samples)
    if sample is not None:
        if sample not in samples:
            raise UserError(f"{path}: no sample '{sample}' (it has {abbreviated(samples) or 'none'})")
        return samples.index(sample)
    if not samples:
        raise UserError(f"{path}: no sample column (a sites-only VCF), so no genotypes to read")
    if len(samples) > 1:
        raise UserError(f"{path}: {len(samples)} samples ({abbreviated(samples)}), deepflows reads one: name it "
                        f"(benchmark: --truth-sample, --query-sample) or extract it with `bcftools view -s NAME "
                        f"{path} -Oz -o ONE.vcf.gz`")  # fmt: skip
    return 0


def vcf_records(records: Iterable, path) -> Iterator:
    """The pysam records of `records` (an iterator over a VariantFile), read in batches with htslib's stderr
    held: a malformed record becomes one line naming the file and its line (`vcf_problem`)."""
    records = iter(records)
    while True:
        with htslib_call(path, "unreadable record", explain=lambda why: f"{path}: {vcf_problem(path, why)}"):
            batch = list(itertools.islice(records, _RECORD_BATCH))
        if not batch:
            return
        yield from batch


def vcf_problem(path: str | Path, diagnosis: str, *, check_order: bool = False) -> str:
    """Where and why a text VCF cannot be read, for the error line (`line N: what`): the first malformed record
    (fewer than 8 columns, POS not a number, fewer sample columns than the header names, REF or ALT not bases;
    with `check_order`, records out of position order), else the record htslib names (`at chr:pos`), else
    htslib's words alone. Only run after a failure: it reads the file from the start."""
    from deepflows.tables import read_lines

    named = re.search(r" at (\S+):(\d+)", diagnosis)
    header: list[str] | None = None
    last: tuple[str, int] | None = None
    finished: set[str] = set()
    try:
        for number, line in read_lines(path):
            fields = line.rstrip("\r\n").split("\t")
            if line.startswith("##"):
                continue
            if line.startswith("#"):
                header = fields
                continue
            problem = _record_problem(fields, header) or (check_order and _order_problem(fields, last, finished))
            if problem:
                return f"line {number}: {problem}"
            if named and fields[:2] == [named[1], named[2]]:
                return f"line {number}: {diagnosis}"
            if last and last[0] != fields[0]:
                finished.add(last[0])
            last = (fields[0], int(fields[1]))
    except UserError:  # not text (BCF): htslib's words are all there is
        pass
    return diagnosis


def _record_problem(fields: list[str], header: list[str] | None) -> str | None:
    if header is None:
        return "a record before the #CHROM header line"
    if len(fields) < 8:
        spaces = " (separated by spaces, not tabs?)" if " " in "\t".join(fields).strip() else ""
        return f"{len(fields)} column{'s' * (len(fields) != 1)}, a VCF record needs at least 8{spaces}"
    if not fields[1].isdigit():
        return f"POS '{fields[1]}' is not a position (a whole number)"
    if 8 < len(fields) < len(header):
        return f"{len(fields)} columns, the #CHROM line names {len(header)}"
    return _allele_problem(fields[3], fields[4].split(",") if fields[4] != "." else ())


def _order_problem(fields: list[str], last: tuple[str, int] | None, finished: set[str]) -> str | None:
    if fields[0] in finished:
        return f"{fields[0]} again after other contigs: not sorted (sort it with `bcftools sort`)"
    if last and last[0] == fields[0] and int(fields[1]) < last[1]:
        return f"POS {fields[1]} after {last[1]}: not sorted by position (sort it with `bcftools sort`)"
    return None


def indexed_vcf(path: str | Path, workdir: str | Path) -> Path:
    """`path` when it has an index; else a bgzipped, tabix-indexed copy in `workdir` (from plain, gzipped,
    bgzipped or BCF input), so that the user's directory is never written to."""
    import gzip
    import shutil
    import zlib

    import pysam

    path = original = require_file(path, "VCF")
    if vcf_index(path) is not None:
        return path
    workdir = Path(workdir)
    is_gzip, is_bgzf = compression(path)
    if is_gzip and not is_bgzf:  # htslib cannot read plain gzip: unpack it first
        path = workdir / f"{len(list(workdir.iterdir()))}.vcf"
        try:
            with gzip.open(original, "rb") as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise UserError(f"{original}: cannot decompress ({err})") from None
    with open_variant_file(path, indexed=False) as vcf:
        is_bcf = vcf.format == "BCF"
    copy = workdir / f"{len(list(workdir.iterdir()))}.vcf.gz"
    log.info("%s has no index: indexing a bgzipped copy in %s", original, workdir)
    with htslib_call(original, "cannot index a copy", explain=lambda why: (
            f"{original}: cannot index a copy: {vcf_problem(original, why, check_order=True)}")):  # fmt: skip
        if is_bcf:  # rewritten as bgzipped VCF, which tabix indexes
            with pysam.VariantFile(str(path)) as src, pysam.VariantFile(str(copy), "wz", header=src.header) as dst:
                for record in src:
                    dst.write(record)
        elif is_bgzf:
            shutil.copyfile(path, copy)
        else:
            pysam.tabix_compress(str(path), str(copy), force=True)
        return Path(pysam.tabix_index(str(copy), preset="vcf", force=True))


class VcfReader:
    """Reads Variants (one sample's GT) from an indexed VCF/BCF, one region at a time.

    Skipped, and counted in `skipped_symbolic` / `skipped_filtered`:
    - records with a symbolic allele (`<DEL>`, breakends): their sequence is unknown;
    - records whose FILTER is not PASS or `.`, when `pass_only` (the truth sets' convention).
    A spanning-deletion allele `*` is dropped and genotype entries that pointed to it become 0: the
    deletion itself is another record, so this record leaves that haplotype unchanged. Missing genotype
    entries (`./1`) also become 0; a genotype with no called allele becomes None.
    """

    def __init__(self, path: str | Path, *, pass_only: bool = True, sample: str | None = None,
                 name: str | Path | None = None):  # fmt: skip
        """`sample`: whose genotypes (default: the only one); `name`: the file to name in messages, when `path`
        is an indexed copy of it (`indexed_vcf`)."""
        self.path = Path(name or path)
        self.pass_only = pass_only
        self.skipped_symbolic = 0
        self.skipped_filtered = 0
        self._file = open_variant_file(path, indexed=True)
        try:
            self._sample = genotype_sample(self._file, self.path, sample)
        except UserError:
            self._file.close()
            raise

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
            raise UserError(f"{self.path}: cannot fetch {contig}:{start}-{end} ({err})") from None
        for record in vcf_records(records, self.path):
            variant = self._to_variant(record)
            if variant is not None:
                yield variant, tuple(record.filter.keys())

    def _to_variant(self, record) -> Variant | None:
        problem = _allele_problem(record.ref or "", record.alts or ())
        if problem:
            raise UserError(f"{self.path}: {vcf_problem(self.path, f'{problem} at {record.chrom}:{record.pos}')}")
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
        call = record.samples[self._sample]
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
    def from_bed(cls, path: str | Path, *, needed_for: str | None = None) -> Regions:
        """Load a BED (plain or gzipped); header, track and browser lines are ignored. With `needed_for`
        (what the intervals are for), a BED without intervals is refused: its result would be empty."""
        from deepflows.genomics.io.regions import read_bed

        intervals: dict[str, list[tuple[int, int]]] = {}
        for iv in read_bed(path):
            intervals.setdefault(iv.contig, []).append((iv.start, iv.end))
        if needed_for and not intervals:
            raise UserError(f"{path}: no intervals, so {needed_for}")
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
