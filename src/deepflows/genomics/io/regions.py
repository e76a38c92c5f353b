"""Genomic intervals: parsing `chr:start-end` and BED files, checking them against a reference, merging and
subtracting, sharding.

Internally every interval is 0-based and half-open, as in BED. On the command line `chr:start-end`
follows the samtools convention (1-based, inclusive, commas allowed), so `chr20:10,000,001-10,010,000`
is the BED interval `chr20 10000000 10010000`.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from pathlib import Path

from deepflows.errors import UserError, abbreviated
from deepflows.inputs import require_file

_REGION = re.compile(r"^(?P<contig>[^:\s]+)(?::(?P<start>[\d,]+)(?:-(?P<end>[\d,]+))?)?$")


@dataclass(frozen=True, order=True)
class Interval:
    contig: str
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:  # samtools style, round-trips through parse_region
        return f"{self.contig}:{self.start + 1}-{self.end}"


def parse_region(text: str, contig_lengths: dict[str, int], reference: str | Path | None = None) -> Interval:
    """`chr`, `chr:pos` or `chr:start-end` (1-based inclusive) -> Interval checked against the reference
    (named in messages when given)."""
    match = _REGION.match(text.strip())
    if not match:
        raise UserError(f"region '{text}': expected chr, chr:pos or chr:start-end")
    contig = match["contig"]
    if contig not in contig_lengths:
        raise UserError(f"region '{text}': contig '{contig}' is not in {_reference(reference)} "
                        f"({_some(contig_lengths)})")  # fmt: skip
    length = contig_lengths[contig]
    if match["start"] is None:
        return Interval(contig, 0, length)
    start = int(match["start"].replace(",", "")) - 1
    end = int(match["end"].replace(",", "")) if match["end"] else start + 1
    if start < 0:
        raise UserError(f"region '{text}': positions are 1-based; start must be >= 1")
    if end <= start:
        raise UserError(f"region '{text}': empty or inverted interval (end before start)")
    if end > length:
        raise UserError(f"region '{text}': ends past the end of {contig} ({length:,} bp in {_reference(reference)})")
    return Interval(contig, start, end)


def read_bed(path: str | Path, contig_lengths: dict[str, int] | None = None,
             reference: str | Path | None = None) -> list[Interval]:  # fmt: skip
    """BED intervals (first three columns; plain or gzipped); contigs are checked when lengths are given
    (and the reference named in messages when given). Problems name the file and line: `PATH: line N: ...`."""
    from deepflows.tables import read_lines

    path = require_file(path, "BED file", empty_ok=True)  # an empty one has no intervals: said below
    intervals = []
    for number, line in read_lines(path):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        try:
            interval = Interval(fields[0], int(fields[1]), int(fields[2]))
        except (IndexError, ValueError):
            raise UserError(f"{path}: line {number}: not a BED line (expected contig, start, end as "
                            f"tab-separated whole numbers; got {line.strip()[:40]!r})") from None  # fmt: skip
        if interval.start < 0:
            raise UserError(f"{path}: line {number}: start {interval.start} is negative")
        if interval.end < interval.start:
            raise UserError(f"{path}: line {number}: end {interval.end} is before start {interval.start}")
        if contig_lengths is not None:
            if interval.contig not in contig_lengths:
                raise UserError(f"{path}: line {number}: contig '{interval.contig}' is not in "
                                f"{_reference(reference)} ({_some(contig_lengths)})")  # fmt: skip
            if interval.end > contig_lengths[interval.contig]:
                raise UserError(f"{path}: line {number}: interval ends past the end of {interval.contig} "
                                f"({contig_lengths[interval.contig]:,} bp in {_reference(reference)})")  # fmt: skip
        intervals.append(interval)
    return intervals


def resolve_regions(specs: list[str] | None, contig_lengths: dict[str, int],
                    reference: str | Path | None = None) -> list[Interval]:  # fmt: skip
    """Command-line regions (BED paths or chr:start-end strings; none = whole reference), merged and sorted.
    A BED without intervals is refused: it would make empty output that looks like a result."""
    if not specs:
        return [Interval(c, 0, n) for c, n in contig_lengths.items()]
    intervals: list[Interval] = []
    for spec in specs:
        if spec.endswith((".bed", ".bed.gz")) or Path(spec).is_file():
            found = read_bed(spec, contig_lengths, reference)
            if not any(iv.length for iv in found):
                raise UserError(f"{spec}: no intervals (an empty BED, or only empty intervals)")
            intervals.extend(found)
        else:
            intervals.append(parse_region(spec, contig_lengths, reference))
    return merge(intervals, order=list(contig_lengths))


def resolve_targets(path: str | Path, contig_lengths: dict[str, int], reference: str | Path | None = None,
                    padding: int = 0, option: str = "--targets") -> list[Interval]:
    """Capture targets of a BED file, each widened by `padding` bp on both sides (within its contig), merged
    and sorted as the reference orders its contigs. Contigs are checked against the reference (read_bed); a BED
    without intervals is refused, naming `option`."""
    found = read_bed(path, contig_lengths, reference)
    if not any(iv.length for iv in found):
        raise UserError(f"{path}: no intervals (an empty BED, or only empty intervals); {option} needs the "
                        f"capture targets")  # fmt: skip
    padded = [Interval(iv.contig, max(0, iv.start - padding), min(contig_lengths[iv.contig], iv.end + padding))
              for iv in found if iv.length]  # fmt: skip
    return merge(padded, order=list(contig_lengths))


def within_targets(specs: list[str] | None, targets: str | Path | None, contig_lengths: dict[str, int],
                   reference: str | Path | None = None, padding: int = 0, purpose: str = "look at") -> list[Interval]:
    """`specs` as resolve_regions reads them (none: the whole reference) and, with a capture targets BED, only its
    targets padded by `padding` bp inside them. No target there is one line naming both (nothing to `purpose`)."""
    regions = resolve_regions(specs, contig_lengths, reference)
    if not targets:
        return regions
    chosen = intersect(regions, resolve_targets(targets, contig_lengths, reference, padding))
    if not chosen:
        raise UserError(f"{targets}: no target overlaps --regions {' '.join(specs or [])}: nothing to {purpose}")
    return chosen


def intersect(intervals: list[Interval], other: list[Interval]) -> list[Interval]:
    """Parts of merged `intervals` also covered by merged `other`, in the order of `intervals`."""
    return subtract(intervals, subtract(intervals, other))


def merge(intervals: list[Interval], order: list[str] | None = None) -> list[Interval]:
    """Sort (by reference contig order when given) and merge overlapping or touching intervals."""
    rank = {c: i for i, c in enumerate(order)} if order else {}
    merged: list[Interval] = []
    for iv in sorted(intervals, key=lambda i: (rank.get(i.contig, len(rank)), i.contig, i.start, i.end)):
        if iv.length == 0:
            continue
        if merged and merged[-1].contig == iv.contig and iv.start <= merged[-1].end:
            last = merged.pop()
            iv = Interval(iv.contig, last.start, max(last.end, iv.end))
        merged.append(iv)
    return merged


def subtract(intervals: list[Interval], removed: list[Interval]) -> list[Interval]:
    """Parts of merged `intervals` not covered by merged `removed`."""
    by_contig: dict[str, list[Interval]] = {}
    for r in removed:
        by_contig.setdefault(r.contig, []).append(r)
    ends = {c: [r.end for r in rs] for c, rs in by_contig.items()}
    kept = []
    for iv in intervals:
        cuts = by_contig.get(iv.contig, [])
        start = iv.start
        for cut in cuts[bisect.bisect_right(ends.get(iv.contig, []), iv.start):]:
            if cut.start >= iv.end:
                break
            if cut.start > start:
                kept.append(Interval(iv.contig, start, cut.start))
            start = max(start, cut.end)
        if start < iv.end:
            kept.append(Interval(iv.contig, start, iv.end))
    return kept


def parse_shard(text: str) -> tuple[int, int]:
    """`i/n` (0-based i) -> (i, n)."""
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or int(match[2]) < 1 or int(match[1]) >= int(match[2]):
        raise UserError(f"--shard '{text}': expected i/n with 0 <= i < n, e.g. 0/4")
    return int(match[1]), int(match[2])


def shard_regions(regions: list[Interval], index: int, count: int) -> list[Interval]:
    """The part of `regions` owned by shard `index` of `count`: contiguous, balanced by base pairs.

    Cut points depend only on the regions and `count`, so every base belongs to exactly one shard and
    a rerun with the same shard count makes the same shards.
    """
    total = sum(r.length for r in regions)
    lo, hi = total * index // count, total * (index + 1) // count
    owned, offset = [], 0
    for r in regions:
        a, b = max(lo, offset), min(hi, offset + r.length)
        if a < b:
            owned.append(Interval(r.contig, r.start + a - offset, r.start + b - offset))
        offset += r.length
    return owned


def windows(region: Interval, size: int) -> list[Interval]:
    """Split a region into consecutive windows of at most `size` bp."""
    return [Interval(region.contig, s, min(s + size, region.end)) for s in range(region.start, region.end, size)]


def _some(contig_lengths: dict[str, int]) -> str:
    return f"reference has {abbreviated(contig_lengths)}"


def _reference(reference: str | Path | None) -> str:
    return f"the reference {reference}" if reference else "the reference"
