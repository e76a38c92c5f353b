"""Systematic sequencing artifacts for simulated reads: the errors that make false candidates.

Independent, quality-driven errors almost never put the same wrong base in two reads at one position, so
reads simulated with them alone give a caller almost no negatives to learn from, while real Illumina data
has many (about 40% of candidates in the NA12878 window are not variants). Two well-known causes:

- Error hotspots: sequence-context-specific substitutions (Illumina's GGC motif and the like) that recur in
  a fraction of the reads at one reference position, on one strand only or with lowered base qualities.
  Drawn per reference position, so both haplotypes and every read share them.
- Homopolymer slippage: polymerase stutter adds or drops one base of a run, more often the longer the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ASCII base -> code 0-3 (ACGT) or 4 (anything else), and back; shared with simulate.reads.
CODE = np.full(256, 4, dtype=np.uint8)
CODE[np.frombuffer(b"ACGT", np.uint8)] = np.arange(4, dtype=np.uint8)
BASE = np.frombuffer(b"ACGTN", dtype=np.uint8)


def complement(ascii_bases: np.ndarray) -> np.ndarray:
    """Complement of ASCII bases (N and other letters become N)."""
    return BASE[np.where(CODE[ascii_bases] < 4, 3 - CODE[ascii_bases], 4)]

# Per-read error probability at a hotspot ~ Beta(3, 30): mean 0.09, above 0.2 at 3% of hotspots, above
# 0.3 at 0.1% (sequence-specific Illumina errors are mostly under 10-20% of reads, Nakamura et al. 2011,
# Meacham et al. 2011). Beta(2, 10) made every fifth hotspot look like a heterozygous SNP, and bcftools'
# SNP precision on such reads fell to 0.75, far below what it reaches on real GIAB data.
HOTSPOT_BETA = (3.0, 30.0)
GG_ENRICHMENT = 4.0  # hotspots are this much likelier right after GG (the GGC motif)
SLIP_MIN_RUN = 5  # homopolymers shorter than this do not slip
SLIP_MAX = 0.25  # cap on the per-read slip probability of one run


@dataclass(frozen=True)
class Hotspots:
    """Per reference position of a region: error probability for forward and reverse reads (0 where no
    hotspot), the wrong base (forward strand, ASCII) and the quality drop of the erroneous base."""

    forward: np.ndarray
    reverse: np.ndarray
    base: np.ndarray
    quality_drop: np.ndarray


def draw_hotspots(seq: str, rate: float, rng: np.random.Generator,
                  beta: tuple[float, float] = HOTSPOT_BETA) -> Hotspots:  # fmt: skip
    """Hotspots at about `rate` of the positions of `seq` (the reference of one region), each erring in a
    Beta(*beta) fraction of its reads."""
    bases = np.frombuffer(seq.upper().encode(), np.uint8)
    n = len(bases)
    after_gg = np.zeros(n, bool)
    after_gg[2:] = (bases[:-2] == ord("G")) & (bases[1:-1] == ord("G"))
    weight = np.where(after_gg, GG_ENRICHMENT, 1.0)
    at = (rng.random(n) < rate * weight / weight.mean()) & (CODE[bases] < 4)
    k = int(at.sum())
    fraction = rng.beta(*beta, k).astype(np.float32)
    strand = rng.choice(3, k, p=[0.4, 0.3, 0.3])  # both strands, forward only, reverse only
    forward, reverse = np.zeros(n, np.float32), np.zeros(n, np.float32)
    forward[at] = np.where(strand != 2, fraction, 0)
    reverse[at] = np.where(strand != 1, fraction, 0)
    base = bases.copy()
    base[at] = BASE[(CODE[bases[at]] + rng.integers(1, 4, k)) % 4]
    # A hotspot on both strands at normal quality is, to any caller, a heterozygous SNP: every hotspot leaves
    # at least one signature (strand bias or lowered qualities), as sequence-specific errors do in real runs.
    # Without this rule a fifth of the hotspots carried none, and the model learned to call real hets whose
    # reads show 25-35% alt as RefCall on artifact-free data.
    lowered = (strand == 0) | (rng.random(k) < 0.5)
    quality_drop = np.zeros(n, np.uint8)
    quality_drop[at] = np.where(lowered, rng.integers(5, 25, k), 0)
    return Hotspots(forward, reverse, base, quality_drop)


def homopolymer_slip_rates(haplotype: bytes, rate: float) -> np.ndarray:
    """Per haplotype position: the probability that a read slips (one base more or less) in the run that
    ends there, `rate * (length - SLIP_MIN_RUN + 1)**2` for runs of at least SLIP_MIN_RUN; 0 elsewhere."""
    bases = np.frombuffer(haplotype, np.uint8)
    out = np.zeros(len(bases), np.float32)
    if len(bases) == 0 or rate <= 0:
        return out
    change = np.flatnonzero(bases[1:] != bases[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(bases)]])
    length = ends - starts
    long_runs = (length >= SLIP_MIN_RUN) & (CODE[bases[starts]] < 4)
    out[ends[long_runs] - 1] = np.minimum(rate * (length[long_runs] - SLIP_MIN_RUN + 1) ** 2, SLIP_MAX)
    return out


@dataclass
class TemplateArtifacts:
    """Artifacts along a batch of templates, in read direction, [n, template length] each."""

    error: np.ndarray  # probability of the hotspot error at this base
    base: np.ndarray  # the wrong base, as the read shows it (complemented on reverse reads)
    quality_drop: np.ndarray
    slip: np.ndarray  # probability of a slip at this base


def along_templates(hotspots: Hotspots, slip: np.ndarray, hap_positions: np.ndarray, ref_offsets: np.ndarray,
                    reverse: np.ndarray) -> TemplateArtifacts:  # fmt: skip
    """Artifacts for templates covering haplotype positions `hap_positions` [n, t] (reference offsets
    `ref_offsets` in the region), reads on the reverse strand where `reverse` [n, 1]."""
    base = hotspots.base[ref_offsets]
    return TemplateArtifacts(
        error=np.where(reverse, hotspots.reverse[ref_offsets], hotspots.forward[ref_offsets]),
        base=np.where(reverse, complement(base), base),
        quality_drop=hotspots.quality_drop[ref_offsets],
        slip=slip[hap_positions],
    )
