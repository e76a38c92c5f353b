"""`deepflows capture-targets`: an exome-like capture target BED for simulated WES data.

Real exome kits' target BEDs are not available offline, so targets are drawn the way exons lie: genes at
random places, each a cluster of exons (1 + Poisson(7) of them, 100-300 bp each) separated by introns, so
that the exons cover about `--fraction` of the span (1.5% for a human exome). Exons with an N are left out.
The BED (0-based, merged, in reference order) is a pure function of the reference, the regions and the seed.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from deepflows.arguments import finite_float, seed
from deepflows.errors import UserError
from deepflows.genomics.io.regions import Interval, merge
from deepflows.outputs import atomic_output, check_new_output

log = logging.getLogger(__name__)

EXON_LENGTH = (100, 300)  # bp, uniform
MEAN_EXONS = 8  # per gene: 1 + Poisson(MEAN_EXONS - 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--ref", required=True, metavar="FASTA", help="reference FASTA, plain or bgzipped (.fai built if missing)")
    add("--region", nargs="+", action="extend", metavar="REGION",
        help="chr, chr:start-end (1-based inclusive) or a BED file; default: every contig")
    add("--exclude", nargs="+", action="extend", metavar="REGION", help="regions or BED files to leave out")
    add("--fraction", type=finite_float, default=0.015,
        help="fraction of the span the targets cover, about (default: %(default)s, a human exome's)")
    add("--seed", type=seed, default=1, help="random seed (default: %(default)s)")
    add("--out", required=True, metavar="BED", help="the targets, BED")


def run(args: argparse.Namespace) -> None:
    from deepflows.genomics.io.hts import fetch_sequence, open_reference
    from deepflows.genomics.simulate.sample import simulated_regions, write_bed

    if not 0 < args.fraction <= 0.5:
        raise UserError(f"--fraction {args.fraction}: must be above 0 and at most 0.5")
    check_new_output(args.out, "--out")
    fasta = open_reference(args.ref)
    lengths = dict(zip(fasta.references, fasta.lengths))
    regions = simulated_regions(args.region, args.exclude, lengths, args.ref)
    targets = []
    for r, region in enumerate(regions):
        drawn = draw_targets(region, args.fraction, np.random.default_rng([args.seed, r]))
        sequence = fetch_sequence(fasta, region).upper()
        targets += [t for t in drawn if "N" not in sequence[t.start - region.start:t.end - region.start]]
    targets = merge(targets, order=list(lengths))
    if not targets:
        raise UserError(f"--region {' '.join(args.region or ['(all)'])}: too short for any capture target")
    covered = sum(t.length for t in targets)
    log.info("%d targets, %s bp (%.2f%% of %s bp)", len(targets), f"{covered:,}",
             100 * covered / sum(r.length for r in regions), f"{sum(r.length for r in regions):,}")
    with atomic_output(args.out) as tmp:
        write_bed(tmp, targets)


def draw_targets(region: Interval, fraction: float, rng: np.random.Generator) -> list[Interval]:
    """Exon-like targets in `region`: genes placed uniformly, exons separated by introns whose mean length
    makes exons 5% of a gene's span at a 1.5% fraction and more of it at denser fractions (up to half), so
    that genes stay clusters of exons instead of overlapping into long blocks."""
    exon_mean = sum(EXON_LENGTH) / 2
    genes = rng.poisson(fraction * region.length / (MEAN_EXONS * exon_mean))
    density = min(0.05 * fraction / 0.015, 0.5)  # exon bases per gene span
    intron_mean = exon_mean * (1 / density - 1)
    targets = []
    for start in rng.integers(region.start, region.end, genes).tolist():
        cursor = start
        for _ in range(1 + rng.poisson(MEAN_EXONS - 1)):
            length = int(rng.integers(EXON_LENGTH[0], EXON_LENGTH[1] + 1))
            if cursor + length > region.end:
                break
            targets.append(Interval(region.contig, cursor, cursor + length))
            cursor += length + 50 + int(rng.exponential(intron_mean))
    return targets
