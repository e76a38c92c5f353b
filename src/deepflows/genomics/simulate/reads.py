"""Illumina-like read pairs from the two haplotypes of a simulated sample.

Each haplotype is the reference with that haplotype's alleles applied; fragments are drawn from it
with normal insert sizes, and reads get a per-cycle quality profile, substitutions at the rate their
qualities claim, rare 1-bp indel errors and the systematic artifacts of deepflows.genomics.simulate.artifacts
(error hotspots, homopolymer slippage). Read names record where each fragment came from.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from deepflows.genomics.io.hts import fetch_sequence
from deepflows.genomics.io.regions import Interval
from deepflows.genomics.io.variants import Variant
from deepflows.genomics.simulate.artifacts import (
    BASE,
    CODE,
    HOTSPOT_BETA,
    TemplateArtifacts,
    along_templates,
    complement,
    draw_hotspots,
    homopolymer_slip_rates,
)
from deepflows.genomics.simulate.library import (
    CaptureMap,
    HaplotypeLibrary,
    LibraryModel,
    capture_map,
    capture_probability,
    draw_stutter,
    find_repeats,
    gc_weights,
    read_bases_on_target,
    stuttered_fragment,
    target_efficiencies,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadModel:
    """Illumina-like pairs: depth over both haplotypes, normal insert sizes, random error rates scaled together
    (the systematic artifacts, hotspots and slippage, have their own rates and are not scaled)."""

    depth: float = 30.0
    read_length: int = 150
    insert_mean: float = 400.0
    insert_sd: float = 60.0
    error_rate_scale: float = 1.0
    indel_error_rate: float = 1e-4
    hotspot_rate: float = 3e-3  # fraction of reference positions with a systematic error hotspot
    hotspot_beta: tuple[float, float] = HOTSPOT_BETA  # per-read error fraction at a hotspot
    homopolymer_slip_rate: float = 1e-3  # slip probability of a run of 5; grows with (length - 4)^2
    library: LibraryModel = LibraryModel()  # capture, GC bias, PCR duplicates and stutter: none by default

    @property
    def max_proper_insert(self) -> int:
        return int(self.insert_mean + 5 * self.insert_sd)


def build_haplotype(seq: str, region: Interval, variants: list[Variant], hap: int) -> tuple[bytes, np.ndarray]:
    """One haplotype of a region and, per base, the reference position it came from.

    Inserted bases map to their anchor base; deleted reference bases have no haplotype base.
    """
    pieces, origin, cursor = [], [], region.start
    for v in variants:
        allele = v.genotype[hap]
        if allele == 0:
            continue
        alt = v.alts[allele - 1]
        pieces += [seq[cursor - region.start:v.start - region.start], alt]
        origin += [np.arange(cursor, v.start), v.start + np.minimum(np.arange(len(alt)), len(v.ref) - 1)]
        cursor = v.end
    pieces.append(seq[cursor - region.start:])
    origin.append(np.arange(cursor, region.end))
    return "".join(pieces).encode(), np.concatenate(origin).astype(np.int64)


@dataclass
class ReadPairs:
    """A batch of pairs as sequenced: ASCII bases and Phred qualities, [n, read_length] each."""

    names: list[str]
    seq1: np.ndarray
    qual1: np.ndarray
    seq2: np.ndarray
    qual2: np.ndarray


def read_name(contig: str, index: int, hap: int, ref_start: int, ref_end: int) -> str:
    """`sim:{contig}:{index}:{haplotype 1|2}:{fragment start}-{end}` (1-based inclusive reference span)."""
    return f"sim:{contig}:{index}:{hap + 1}:{ref_start + 1}-{ref_end}"


def read_origin(name: str) -> tuple[str, int, int, int]:
    """(contig, haplotype 0|1, start, end) of the fragment a simulated read came from (0-based half-open)."""
    head, _index, hap, span = name.rsplit(":", 3)
    start, end = span.split("-")
    return head.removeprefix("sim:"), int(hap) - 1, int(start) - 1, int(end)


def simulate_reads(regions: list[Interval], per_region: list[list[Variant]], fasta, model: ReadModel,
                   seed: int, batch_size: int = 20_000, targets: list[Interval] | None = None) -> Iterator[ReadPairs]:
    """Pairs from both haplotypes of every region, half the depth each, in batches. With `targets` (capture
    targets, reference coordinates), the depth is that of the targets and most reads come from them."""
    counts: Counter[str] = Counter()
    library = model.library
    for r, (region, variants) in enumerate(zip(regions, per_region)):
        seq = fetch_sequence(fasta, region)
        hotspots = draw_hotspots(
            seq, model.hotspot_rate, np.random.default_rng([seed, 2, r]), model.hotspot_beta
        )
        efficiency = None
        if targets is not None:
            inside = [(t.start, t.end) for t in targets if t.contig == region.contig and t.start < region.end
                      and t.end > region.start]  # fmt: skip
            efficiency = target_efficiencies(region.start, region.end, inside, library.capture_depth_sigma,
                                             np.random.default_rng([seed, 3, r]))  # fmt: skip
        for hap in (0, 1):
            haplotype, origin = build_haplotype(seq, region, variants, hap)
            slip = homopolymer_slip_rates(haplotype, model.homopolymer_slip_rate)
            rng = np.random.default_rng([seed, 1, r, hap])
            before = counts["pairs"]
            if len(haplotype) < model.read_length:
                counts["too short"] += 1
                fragments = iter(())
            elif efficiency is None and library.plain:
                fragments = _fragments(haplotype, model, rng, batch_size, counts)
            else:
                fragments = _library_fragments(haplotype, HaplotypeLibrary(
                    options=library,
                    capture=None if efficiency is None else capture_map(origin, region.start, efficiency),
                    repeats=find_repeats(haplotype, library.stutter_rate) if library.stutter_rate > 0 else None,
                ), model, rng, batch_size, counts)  # fmt: skip
            for starts, ends, template1, template2, positions1, positions2, reverse1 in fragments:
                artifacts1, artifacts2 = (
                    along_templates(hotspots, slip, positions, origin[positions] - region.start, reverse)
                    for positions, reverse in ((positions1, reverse1), (positions2, ~reverse1)))  # fmt: skip
                seq1, qual1 = sequence_reads(template1, model, rng, artifacts1)
                seq2, qual2 = sequence_reads(template2, model, rng, artifacts2)
                spans = zip(origin[starts].tolist(), (origin[ends - 1] + 1).tolist())
                names = [read_name(region.contig, counts["pairs"] + i, hap, a, b) for i, (a, b) in enumerate(spans)]
                counts["pairs"] += len(names)
                yield ReadPairs(names, seq1, qual1, seq2, qual2)
            log.info("%s haplotype %d: %d pairs", region, hap + 1, counts["pairs"] - before)
    log.info("simulated %d pairs (skipped %d fragments with N, %d haplotypes shorter than a read)",
             counts["pairs"], counts["with N"], counts["too short"])
    if not library.plain or targets is not None:
        log.info("library: %d PCR duplicate pairs, %d fragments with PCR stutter (before copying)",
                 counts["duplicates"], counts["stuttered fragments"])


def _fragments(haplotype: bytes, model: ReadModel, rng: np.random.Generator, batch_size: int,
               counts: Counter) -> Iterator[tuple[np.ndarray, ...]]:
    """Fragment [start, end) on the haplotype, the templates of read 1 and read 2 (ASCII, read direction),
    the haplotype position of every template base, and whether read 1 is on the reverse strand."""
    length, read_length = len(haplotype), model.read_length
    bases = np.frombuffer(haplotype, np.uint8)
    remaining = _fragments_for_depth(length, model, rng)
    while remaining > 0:
        n = min(batch_size, remaining)
        remaining -= n
        starts, ends = _draw_fragments(n, length, model, rng)
        yield _templates(bases, starts, ends, read_length, rng, counts)


def _fragments_for_depth(length: int, model: ReadModel, rng: np.random.Generator) -> int:
    """How many fragments give one haplotype of `length` bp half the depth: uniform fragment starts leave the
    ends thinner, the interior gets the target depth."""
    usable = max(length - model.insert_mean, model.read_length)
    return int(rng.poisson(model.depth / 2 * usable / (2 * model.read_length)))


def _draw_fragments(n: int, length: int, model: ReadModel, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """n fragments [start, end) placed uniformly on a haplotype of `length` bp, normal insert sizes."""
    inserts = np.clip(np.rint(rng.normal(model.insert_mean, model.insert_sd, n)), model.read_length, length)
    starts = rng.integers(0, length - inserts.astype(np.int64) + 1)
    return starts, starts + inserts.astype(np.int64)


def _templates(bases: np.ndarray, starts: np.ndarray, ends: np.ndarray, read_length: int,
               rng: np.random.Generator, counts: Counter, edited: dict | None = None) -> tuple[np.ndarray, ...]:
    """The templates of both reads of each fragment (a random strand each); fragments with N in a read are
    dropped. `edited` maps a fragment's row to its own bases (PCR stutter), read instead of the haplotype's."""
    length, n = len(bases), len(starts)
    steps = np.arange(read_length + 4)  # a few template bases past the read end, for deletion errors
    forward_at = np.minimum(starts[:, None] + steps, length - 1)
    backward_at = np.maximum(ends[:, None] - 1 - steps, 0)
    forward, backward = bases[forward_at], complement(bases[backward_at])
    for row, fragment in (edited or {}).items():
        forward[row], backward[row] = _ends_of(fragment, bases, starts[row], ends[row], len(steps))
    from_reverse_strand = (rng.random(n) < 0.5)[:, None]
    template1 = np.where(from_reverse_strand, backward, forward)
    template2 = np.where(from_reverse_strand, forward, backward)
    positions1 = np.where(from_reverse_strand, backward_at, forward_at)
    positions2 = np.where(from_reverse_strand, forward_at, backward_at)
    has_n = ((template1[:, :read_length] == ord("N")) | (template2[:, :read_length] == ord("N"))).any(axis=1)
    counts["with N"] += int(has_n.sum())
    keep = ~has_n
    return (starts[keep], ends[keep], template1[keep], template2[keep], positions1[keep], positions2[keep],
            from_reverse_strand[keep])  # fmt: skip


def _ends_of(fragment: np.ndarray, bases: np.ndarray, start: int, end: int, size: int) -> tuple[np.ndarray, ...]:
    """The first `size` bases of an edited fragment and the reverse complement of its last `size`, continued
    into the haplotype past its ends where it is shorter (as the unedited templates are)."""
    after = bases[end:end + size]
    before = bases[max(start - size, 0):start]
    head = np.concatenate([fragment, after, np.full(size, bases[-1], np.uint8)])[:size]
    tail = np.concatenate([np.full(size, bases[0], np.uint8), before, fragment])[-size:]
    return head, complement(tail[::-1])


def _library_fragments(haplotype: bytes, library: HaplotypeLibrary, model: ReadModel, rng: np.random.Generator,
                       batch_size: int, counts: Counter) -> Iterator[tuple[np.ndarray, ...]]:
    """As _fragments, for a library with capture, GC bias, duplicates or stutter (deepflows.genomics.simulate.
    library): fragments are drawn uniformly and kept with the probability the library gives them until the
    depth is reached (over the targets when capturing); kept fragments then get their PCR copies and stutter."""
    length, read_length = len(haplotype), model.read_length
    bases = np.frombuffer(haplotype, np.uint8)
    cumulative_gc = np.concatenate([[0], np.cumsum((bases == ord("G")) | (bases == ord("C")))])
    capture = library.capture
    if capture is None:
        wanted = float(_fragments_for_depth(length, model, rng))  # fragments
    else:
        wanted = model.depth / 2 * capture.target_bases  # read bases on target
        if wanted == 0:
            return
        off_target = _off_target_probability(capture, cumulative_gc, length, model, library.options,
                                              np.random.default_rng(rng.integers(2**63)))  # fmt: skip
    repeats, idle = library.repeats, 0
    while wanted > 0:
        starts, ends = _draw_fragments(batch_size, length, model, rng)
        weight = gc_weights(cumulative_gc, starts, ends, library.options.gc_bias)
        if capture is not None:
            captured = capture_probability(capture, starts, ends)
            weight = np.where(captured > 0, captured, off_target) * weight
        kept = rng.random(batch_size) < weight
        starts, ends = starts[kept], ends[kept]
        idle = 0 if kept.any() else idle + 1
        if idle > 100:  # nothing can be kept here (targets too short to capture): stop, not spin
            log.warning("no fragment kept in %d draws of %d: stopping with the depth not reached", idle, batch_size)
            return
        gained = (read_bases_on_target(capture, starts, ends, read_length) if capture is not None
                  else np.ones(len(starts)))  # fmt: skip
        total = np.cumsum(gained)
        enough = int(np.searchsorted(total, wanted)) + 1  # the fragment that reaches the depth is the last
        starts, ends = starts[:enough], ends[:enough]
        wanted -= float(total[min(enough, len(total)) - 1]) if len(total) else 0.0
        copies = (rng.geometric(1 - library.options.duplicate_rate, len(starts))
                  if library.options.duplicate_rate > 0 else np.ones(len(starts), np.int64))  # fmt: skip
        counts["duplicates"] += int(copies.sum() - len(copies))
        stutter, direction = (draw_stutter(repeats, starts, ends, rng) if repeats is not None
                              else (np.full(len(starts), -1), np.zeros(len(starts), np.int8)))  # fmt: skip
        # a stuttered fragment is built once and shared by its copies
        stuttered = {i: stuttered_fragment(bases, int(starts[i]), int(ends[i]), repeats, int(stutter[i]),
                                           int(direction[i]))
                     for i in np.flatnonzero(stutter >= 0).tolist()}  # fmt: skip
        counts["stuttered fragments"] += len(stuttered)
        source = np.repeat(np.arange(len(starts)), copies)  # the fragment each copy is of
        edited = {row: stuttered[int(source[row])] for row in np.flatnonzero(stutter[source] >= 0).tolist()}
        yield _templates(bases, starts[source], ends[source], read_length, rng, counts, edited)


def _off_target_probability(capture: CaptureMap, cumulative_gc: np.ndarray, length: int, model: ReadModel,
                            options: LibraryModel, rng: np.random.Generator) -> float:  # fmt: skip
    """The keep probability of a fragment with no target that makes `off_target_fraction` of the kept
    fragments off-target, estimated from a pilot draw of fragments."""
    starts, ends = _draw_fragments(50_000, length, model, rng)
    weight = gc_weights(cumulative_gc, starts, ends, options.gc_bias)
    captured = capture_probability(capture, starts, ends)
    on, off = float((captured * weight).sum()), float(weight[captured == 0].sum())
    fraction = options.off_target_fraction
    return min(fraction / (1 - fraction) * on / off, 1.0) if off > 0 and fraction > 0 else 0.0


def quality_profile(n: int, read_length: int, rng: np.random.Generator) -> np.ndarray:
    """Phred qualities [n, read_length]: ~Q35 for the first cycles, ~Q37-38, decaying toward the 3' end;
    per-read offsets, per-base noise and, in 5% of reads, a Q2 tail (Illumina's 'B' tail)."""
    cycle = np.arange(read_length)
    mean = 37.5 - 2.5 * np.exp(-cycle / 2) - 9 * (cycle / max(read_length - 1, 1)) ** 2.5
    q = mean + rng.normal(0, 1.5, (n, 1)) + rng.normal(0, 2.5, (n, read_length))
    tail_from = np.where(rng.random(n) < 0.05, rng.integers(int(0.6 * read_length), read_length, n), read_length)
    q[cycle[None, :] >= tail_from[:, None]] = 2
    return np.clip(np.rint(q), 2, 41).astype(np.uint8)


def sequence_reads(templates: np.ndarray, model: ReadModel, rng: np.random.Generator,
                   artifacts: TemplateArtifacts | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reads of `model.read_length` from templates (ASCII, read direction, a few bases longer): hotspot
    errors, then homopolymer slips and rare random 1-bp indel errors, then substitutions with the
    probability each base's quality claims."""
    n, read_length = len(templates), model.read_length
    scale = model.error_rate_scale
    hot = np.zeros(templates.shape, bool)
    slipped = np.zeros(n, bool)
    if artifacts is not None:
        # Not scaled by error_rate_scale: systematic errors belong to the sequence and the chemistry, not
        # to a noisier run; scaled, they turned into het-like negatives that taught a model to miss hets.
        hot = rng.random(templates.shape) < artifacts.error
        templates = np.where(hot, artifacts.base, templates)
        slip = artifacts.slip[:, :read_length]
        slipped = rng.random(n) < slip.sum(axis=1)
    reads = templates[:, :read_length].copy()
    for row in np.flatnonzero(slipped):  # one slip at a run, chosen by its rate: drop or repeat a base
        at = int(rng.choice(read_length, p=slip[row] / slip[row].sum()))
        reads[row] = _with_indel(templates[row], read_length, at, None if rng.random() < 0.5 else templates[row, at])
    indel_rate = min(model.indel_error_rate * scale, 0.01)
    for row in np.flatnonzero(rng.binomial(read_length, indel_rate, n)):
        at = int(rng.integers(1, read_length - 1))
        reads[row] = _with_indel(templates[row], read_length, at,
                                 None if rng.random() < 0.5 else BASE[rng.integers(0, 4)])  # fmt: skip
    quals = quality_profile(n, read_length, rng)
    error = rng.random((n, read_length)) < np.minimum(10 ** (quals / -10.0) * scale, 0.75)
    codes = CODE[reads[error]]
    swapped = np.where(codes < 4, (codes + rng.integers(1, 4, len(codes))) % 4, 4)
    reads[error] = BASE[swapped]
    if artifacts is not None:
        # hotspot bases read with lowered quality (one base off past an indel error in the same read: rare)
        drop = np.where(hot, artifacts.quality_drop, 0)[:, :read_length]
        quals = np.maximum(quals.astype(np.int16) - drop, 2).astype(np.uint8)
    return reads, quals


def _with_indel(template: np.ndarray, read_length: int, at: int, inserted) -> np.ndarray:
    """The read with template base `at` skipped (inserted None) or with `inserted` put before it."""
    if inserted is None:
        return np.concatenate([template[:at], template[at + 1:]])[:read_length]
    return np.concatenate([template[:at], [inserted], template[at:]]).astype(np.uint8)[:read_length]
