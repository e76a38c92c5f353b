"""How much a sample's library stutters at homopolymers, measured once over a whole run's regions.

A run where a quarter of the reads are one base shorter holds a het deletion in a clean library, and may hold
nothing in a PCR-amplified one, or in reads whose polymerase slips: one site and its 221 columns cannot tell
the two apart, the sample can. Every reference run of one base of at least MIN_RUN bases, in evenly spaced
windows of the regions (a region shorter than a window: the window around it), gives the share of its
spanning reads whose alignment changes its length; the sample's noise is the mean share over the runs,
leaving out the highest tenth, where real indels sit.

Each shard measures it over the whole run's regions (not its own), so every shard of a run records the same
value; a model option (`sample_noise`) reads it beside the pileup.
"""

from __future__ import annotations

import re

import numpy as np

from deepflows.genomics.examples.readbatch import SKIP_FLAGS
from deepflows.genomics.io.hts import reading_reads
from deepflows.genomics.io.regions import Interval, merge, windows

MIN_RUN = 7  # shorter runs seldom stutter in any library; longer ones are too few in a 100-kb window
ANCHOR = 3  # reference bases a read must cover on either side of a run
MIN_READS = 10  # spanning reads a run needs to be counted
MIN_MAPQ = 10
WINDOW = 100_000
MAX_WINDOWS = 100  # bounds the work on a whole genome: ~10 Mb scanned
KEPT = 0.9  # the lowest 90% of the runs' shares are averaged
MIN_RUNS = 20  # fewer measured runs: no value (a model that reads it refuses the run)


def homopolymer_runs(sequence: str, offset: int, min_run: int = MIN_RUN):
    """[start, end) of every run of one base of at least `min_run` bases (0-based reference positions)."""
    pattern = "|".join(f"{b}{{{min_run},}}" for b in "ACGT")
    for m in re.finditer(pattern, sequence.upper()):
        yield offset + m.start(), offset + m.end()


def length_changes(bam, contig: str, start: int, end: int, anchor: int = ANCHOR) -> list[int]:
    """Per read spanning [start, end) with `anchor` bases either side: its inserted minus deleted bases there
    (the aligner may put the run's indel at either edge). Reads the pileups drop are left out."""
    out = []
    for read in bam.fetch(contig, start - 1, end + 1):
        if read.flag & SKIP_FLAGS or read.mapping_quality < MIN_MAPQ:
            continue
        if read.reference_start > start - anchor or read.reference_end < end + anchor:
            continue
        change, pos = 0, read.reference_start
        for op, n in read.cigartuples:
            near = start - 1 <= pos <= end
            if op in (0, 7, 8):
                pos += n
            elif op == 2:
                change -= n if near else 0
                pos += n
            elif op == 1:
                change += n if near else 0
        out.append(change)
    return out


def measured_windows(regions, lengths: dict[str, int]) -> list[Interval]:
    """The regions cut into WINDOW-bp pieces, at most MAX_WINDOWS of them evenly spaced. A region shorter than
    WINDOW is widened to WINDOW around its centre (within its contig of `lengths`) first: a 10-kb call still
    gets its sample's noise from the reads around it."""
    widened = []
    for r in regions:
        if r.length < WINDOW:
            lo = max(0, min((r.start + r.end) // 2 - WINDOW // 2, lengths[r.contig] - WINDOW))
            r = Interval(r.contig, lo, min(lengths[r.contig], lo + WINDOW))
        widened.append(r)
    pieces = [piece for span in merge(widened) for piece in windows(span, WINDOW)]
    if len(pieces) > MAX_WINDOWS:
        pieces = [pieces[i] for i in np.linspace(0, len(pieces) - 1, MAX_WINDOWS).round().astype(int)]
    return pieces


def measure(bam, bam_path, reference, regions) -> dict:
    """{"homopolymer_length_error": the sample's noise (None with fewer than MIN_RUNS runs), "runs": measured,
    "min_run": MIN_RUN}; `bam` (read from `bam_path`) and `reference` are open pysam files, `regions` the run's
    Intervals."""
    shares = []
    for window in measured_windows(regions, dict(zip(reference.references, reference.lengths))):
        with reading_reads(bam, bam_path, str(window)):
            for start, end in homopolymer_runs(reference.fetch(window.contig, window.start, window.end), window.start):
                changes = length_changes(bam, window.contig, start, end)
                if len(changes) >= MIN_READS:
                    shares.append(np.count_nonzero(changes) / len(changes))
    value = None
    if len(shares) >= MIN_RUNS:
        value = round(float(np.mean(np.sort(shares)[: max(1, int(len(shares) * KEPT))])), 5)
    return {"homopolymer_length_error": value, "runs": len(shares), "min_run": MIN_RUN}
