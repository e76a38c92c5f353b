"""What library preparation does to the fragments a sequencer sees: hybrid capture (exomes) and PCR.

- Capture: only fragments that overlap a capture target by enough bases are pulled down, each target with
  its own efficiency (log-normal across targets: real exomes show a wide spread of per-target depth), so
  depth peaks inside a target and falls off over its edges; a few % of the reads come from anywhere
  (off-target).
- GC bias: fragments far from ~45% GC amplify (and capture) less well.
- PCR duplicates: copies of one fragment (same ends, same strand), sequenced independently.
- PCR stutter: the polymerase adds or drops one unit of a homopolymer or short tandem repeat while
  amplifying; every copy of that fragment, and both reads of its pair, carry the same indel error.

Fragments are drawn uniformly on a haplotype and kept with the probability these effects give them, until
the kept fragments reach the requested depth (over the targets when capturing). Everything here works on
haplotype coordinates; the targets and their efficiencies are drawn on the reference and carried over
through each haplotype base's reference position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GC_OPTIMUM = 0.45  # fragments with this GC fraction amplify best
GC_SCALE = 0.2  # a fragment GC_SCALE away from the optimum keeps exp(-gc_bias) of its coverage
CAPTURE_OVERLAP = (20, 80)  # bp of target in a fragment: captured from the first, fully from the second
CAPTURE_SATURATION = 3.0  # targets this many times more efficient than the mean are captured at certainty
STUTTER_MIN_UNITS = 4  # repeats with fewer copies of their unit (homopolymers: fewer bases + 2) do not stutter
STUTTER_MAX = 0.3  # cap on one repeat's stutter probability per fragment
STUTTER_DELETION = 0.7  # PCR stutter mostly contracts a repeat
MAX_UNIT = 4


@dataclass(frozen=True)
class LibraryModel:
    """How the library was made (all off: a PCR-free whole-genome library, the simulator's default)."""

    gc_bias: float = 0.0  # coverage of a fragment with GC 0.45 +- 0.2 is exp(-gc_bias) of the best
    duplicate_rate: float = 0.0  # expected fraction of reads that are PCR duplicates of another read
    stutter_rate: float = 0.0  # per fragment and repeat: rate * (units - 3), capped at STUTTER_MAX
    capture_depth_sigma: float = 0.6  # SD of log target efficiency (with targets)
    off_target_fraction: float = 0.04  # of the kept fragments (with targets)

    @property
    def plain(self) -> bool:
        return self.gc_bias == 0 and self.duplicate_rate == 0 and self.stutter_rate == 0


@dataclass(frozen=True)
class Repeats:
    """Homopolymers and short tandem repeats of a haplotype: [start, end), unit length, stutter probability,
    and the running sum of the probabilities (for drawing at most one stutter per fragment)."""

    start: np.ndarray
    end: np.ndarray
    unit: np.ndarray
    probability: np.ndarray
    cumulative: np.ndarray


@dataclass(frozen=True)
class HaplotypeLibrary:
    """The library as one haplotype sees it: the options, the targets mapped onto it, its repeats."""

    options: LibraryModel
    capture: CaptureMap | None
    repeats: Repeats | None


def find_repeats(haplotype: bytes, rate: float) -> Repeats:
    """Maximal runs of a 1-4 bp unit with at least STUTTER_MIN_UNITS copies (homopolymers: 6 bases), in
    order; a run touching a repeat of a shorter unit is left out. Stutter grows with the copies beyond 3
    (homopolymers: with the bases beyond 5)."""
    bases = np.frombuffer(haplotype, np.uint8)
    taken = np.zeros(len(bases), bool)  # bases already in a repeat of a shorter unit
    chosen_start, chosen_end, chosen_unit = [], [], []
    for unit in range(1, MAX_UNIT + 1):
        if len(bases) <= unit:
            break
        # runs of bases[i] == bases[i + unit] for i in [a, b) make the repeat [a, b + unit)
        same = np.concatenate([[0], bases[unit:] == bases[:-unit], [0]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(same))
        starts, ends = edges[::2], edges[1::2] + unit
        keep = ((ends - starts) >= max(STUTTER_MIN_UNITS * unit, 6)) & (bases[starts] != ord("N"))
        starts, ends = starts[keep], ends[keep]
        before = np.concatenate([[0], np.cumsum(taken)])
        # repeats of a shorter unit win (AAAAAAAA is no dinucleotide repeat), so repeats never overlap
        fresh = before[ends] == before[starts]
        starts, ends = starts[fresh], ends[fresh]
        for a, b in zip(starts.tolist(), ends.tolist()):
            taken[a:b] = True
        chosen_start.append(starts)
        chosen_end.append(ends)
        chosen_unit.append(np.full(len(starts), unit))
    start = np.concatenate(chosen_start) if chosen_start else np.zeros(0, np.int64)
    end = np.concatenate(chosen_end) if chosen_end else np.zeros(0, np.int64)
    unit = np.concatenate(chosen_unit) if chosen_unit else np.zeros(0, np.int64)
    order = np.argsort(start, kind="stable")
    start, end, unit = start[order], end[order], unit[order]
    copies = (end - start) // unit
    probability = np.minimum(rate * np.maximum(copies - (STUTTER_MIN_UNITS - 1), 0), STUTTER_MAX)
    probability = np.where(unit == 1, np.minimum(rate * np.maximum(end - start - 5, 0), STUTTER_MAX), probability)
    return Repeats(start, end, unit, probability, np.concatenate([[0.0], np.cumsum(probability)]))


def gc_weights(cumulative_gc: np.ndarray, starts: np.ndarray, ends: np.ndarray, gc_bias: float) -> np.ndarray:
    """Relative amplification of fragments [starts, ends) given the running GC count of the haplotype."""
    if gc_bias == 0:
        return np.ones(len(starts))
    gc = (cumulative_gc[ends] - cumulative_gc[starts]) / np.maximum(ends - starts, 1)
    return np.exp(-gc_bias * ((gc - GC_OPTIMUM) / GC_SCALE) ** 2)


@dataclass(frozen=True)
class CaptureMap:
    """Targets on one haplotype: running counts of target bases and of target efficiency, so that a
    fragment's overlap with the targets and its mean efficiency there are two lookups each."""

    on_target: np.ndarray  # [haplotype length + 1] running count of target bases
    efficiency: np.ndarray  # [haplotype length + 1] running sum of the efficiency of target bases

    @property
    def target_bases(self) -> int:
        return int(self.on_target[-1])


def capture_map(origin: np.ndarray, region_start: int, efficiency_at: np.ndarray) -> CaptureMap:
    """The haplotype's view of the targets: `efficiency_at` is per reference position of the region (0 off
    target); `origin` the reference position of each haplotype base."""
    per_base = efficiency_at[origin - region_start]
    return CaptureMap(np.concatenate([[0], np.cumsum(per_base > 0)]), np.concatenate([[0.0], np.cumsum(per_base)]))


def target_efficiencies(region_start: int, region_end: int, targets: list[tuple[int, int]], sigma: float,
                        rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """Per reference position of a region: its target's capture efficiency (log-normal, mean 1), 0 off target."""
    out = np.zeros(region_end - region_start, np.float64)
    draws = np.exp(rng.normal(-sigma**2 / 2, sigma, len(targets)))
    for (a, b), value in zip(targets, draws):
        out[max(a, region_start) - region_start:min(b, region_end) - region_start] = value
    return out


def capture_probability(capture: CaptureMap, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Chance that hybrid capture pulls down each fragment: its mean target efficiency, ramped up with the
    bases of target it holds, saturating at CAPTURE_SATURATION times the mean efficiency."""
    overlap = capture.on_target[ends] - capture.on_target[starts]
    efficiency = (capture.efficiency[ends] - capture.efficiency[starts]) / np.maximum(overlap, 1)
    low, high = CAPTURE_OVERLAP
    ramp = np.clip((overlap - low) / (high - low), 0, 1)
    return np.minimum(efficiency * ramp / CAPTURE_SATURATION, 1.0)


def read_bases_on_target(capture: CaptureMap, starts: np.ndarray, ends: np.ndarray, read_length: int) -> np.ndarray:
    """Bases of target under the two reads of each fragment (overlapping mates count twice, as depth does)."""
    first = capture.on_target[np.minimum(starts + read_length, ends)] - capture.on_target[starts]
    second = capture.on_target[ends] - capture.on_target[np.maximum(ends - read_length, starts)]
    return first + second


def draw_stutter(repeats: Repeats, starts: np.ndarray, ends: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """At most one stutter per fragment, in a repeat wholly inside it: (repeat index or -1, +1 insertion or
    -1 deletion of one unit)."""
    n = len(starts)
    if len(repeats.start) == 0:
        return np.full(n, -1), np.zeros(n, np.int8)
    first = np.searchsorted(repeats.start, starts, side="left")
    last = np.searchsorted(repeats.end, ends, side="right")  # repeats [first, last) end inside the fragment
    last = np.maximum(last, first)
    low = repeats.cumulative[first]
    total = repeats.cumulative[last] - low
    u = rng.random(n)
    hit = u < np.minimum(total, 1.0)
    index = np.searchsorted(repeats.cumulative, low + u, side="right") - 1
    index = np.where(hit, np.clip(index, first, np.maximum(last - 1, first)), -1)
    direction = np.where(rng.random(n) < STUTTER_DELETION, -1, 1).astype(np.int8)
    return index, np.where(hit, direction, 0).astype(np.int8)


def stuttered_fragment(bases: np.ndarray, start: int, end: int, repeats: Repeats, index: int,
                       direction: int) -> np.ndarray:  # fmt: skip
    """The fragment's bases with one unit of repeat `index` dropped (-1) or repeated (+1) at its end."""
    unit = int(repeats.unit[index])
    at = int(repeats.end[index])
    if direction < 0:
        return np.concatenate([bases[start:at - unit], bases[at:end]])
    return np.concatenate([bases[start:at], bases[at - unit:at], bases[at:end]])
