"""Simulate a diploid Illumina-like sample: variants, haplotypes, paired reads, alignment, outputs.

`simulate()` is the whole stage; its pieces live in `variants` (the sample's variants),
`reads` (haplotypes and read pairs) and `align` (aligners and the BAM); this module holds the
options, the regions, and the staged writing of the outputs. Coordinates are 0-based half-open.
Every random choice draws from a generator seeded by (seed, purpose, ...), so one part of the
simulation never shifts the random stream of another.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from deepflows import __version__
from deepflows.errors import UserError
from deepflows.genomics.io.hts import fetch_sequence, htslib_writing, open_reference
from deepflows.genomics.io.regions import Interval, merge, resolve_regions, resolve_targets, subtract
from deepflows.genomics.io.variants import Variant
from deepflows.genomics.simulate.align import align_with_bwa, align_with_mappy, bam_header, sort_and_index
from deepflows.genomics.simulate.external import ExternalSimulator, external_reads
from deepflows.genomics.simulate.qualities import bin_qualities
from deepflows.genomics.simulate.reads import ReadModel, ReadPairs, simulate_reads
from deepflows.genomics.simulate.variants import VariantSpectrum, describe_variants, random_variants, truth_variants
from deepflows.outputs import removed_on_error

log = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".bam", ".bam.bai", ".truth.vcf.gz", ".truth.vcf.gz.tbi", ".confident.bed")
CONFIDENT_EDGE = 500  # coverage ramps up over about one fragment length from a region's edge


@dataclass(frozen=True)
class SimulationOptions:
    ref: str
    out_prefix: str
    regions: list[str] | None = None
    exclude: list[str] | None = None
    truth: str | None = None
    spectrum: VariantSpectrum = VariantSpectrum()
    reads: ReadModel = ReadModel()
    seed: int = 1
    sample: str = "simulated"
    aligner: str = "mappy"
    bwa_index: str | None = None  # a `bwa index` prefix of `ref`; None: `ref` itself, indexed if needed
    targets: str | None = None  # capture target BED: an exome-like library
    mark_duplicates: bool = False
    simulator: ExternalSimulator | None = None  # None: deepflows' own read model
    quality_bins: str = "none"  # deepflows.genomics.simulate.qualities.QUALITY_BINS
    threads: int = 1
    command_line: str = "deepflows simulate"


def simulate(opts: SimulationOptions) -> None:
    """Write PREFIX.bam(.bai), PREFIX.truth.vcf.gz(.tbi) and PREFIX.confident.bed, or nothing on error."""
    started = time.perf_counter()
    fasta = open_reference(opts.ref)
    lengths = dict(zip(fasta.references, fasta.lengths))
    regions = simulated_regions(opts.regions, opts.exclude, lengths, opts.ref)
    targets = capture_targets(opts.targets, regions, lengths, opts.ref) if opts.targets else None
    log.info("simulating %d region(s), %s bp", len(regions), f"{sum(r.length for r in regions):,}")
    with staged_outputs(opts.out_prefix) as stage:
        variant_rng = np.random.default_rng([opts.seed, 0])
        if opts.truth:
            per_region = truth_variants(opts.truth, regions, fasta, variant_rng, stage.workdir)
        else:
            per_region = random_variants(regions, fasta, opts.spectrum, variant_rng)
        variants = [v for group in per_region for v in group]
        log.info("%s", describe_variants(variants))
        with htslib_writing(opts.out_prefix + ".truth.vcf.gz"):
            write_truth_vcf(stage.path(".truth.vcf.gz"), variants, lengths, opts)
        write_bed(stage.path(".confident.bed"), confident_regions(regions, fasta))
        if opts.simulator is None:
            pairs = simulate_reads(regions, per_region, fasta, opts.reads, opts.seed, targets=targets)
        else:
            pairs = external_reads(opts.simulator, regions, per_region, fasta, opts.reads, opts.seed, stage.workdir)
        pairs = binned(pairs, opts.quality_bins)
        header = bam_header(lengths, opts.sample, opts.command_line, read_group_description(opts))
        unsorted = os.path.join(stage.workdir, "unsorted.bam")
        with htslib_writing(opts.out_prefix + ".bam"):
            if opts.aligner == "bwa":
                align_with_bwa(pairs, opts.ref, header, opts.threads, stage.workdir, unsorted, opts.bwa_index)
            else:
                align_with_mappy(pairs, opts.ref, header, opts.reads, opts.threads, unsorted)
            if opts.mark_duplicates:  # samtools markdup sorts and indexes
                from deepflows.genomics.io.duplicates import mark_duplicates

                marked = mark_duplicates(unsorted, stage.path(".bam"), opts.threads, stage.workdir)
                log.info("samtools markdup: %d reads marked as duplicates", marked)
            else:
                sort_and_index(unsorted, stage.path(".bam"), opts.threads, stage.workdir)
    log.info("wrote %s.{bam,truth.vcf.gz,confident.bed} in %.1f s", opts.out_prefix, time.perf_counter() - started)


def binned(pairs: Iterator[ReadPairs], scheme: str) -> Iterator[ReadPairs]:
    """The pairs with their base qualities binned as `scheme`; reads and random streams unchanged."""
    for batch in pairs:
        yield ReadPairs(batch.names, batch.seq1, bin_qualities(batch.qual1, scheme), batch.seq2,
                        bin_qualities(batch.qual2, scheme))


def read_group_description(opts: SimulationOptions) -> dict[str, str]:
    """@RG PM (the simulator and its profile) and DS: which error model and qualities made these reads."""
    simulator = "deepflows" if opts.simulator is None else opts.simulator.description
    return {"PM": simulator, "DS": f"simulator={simulator};quality_bins={opts.quality_bins}"}


# ----------------------------------------------------------------------------- regions


def simulated_regions(regions: list[str] | None, exclude: list[str] | None,
                      lengths: dict[str, int], reference: str | None = None) -> list[Interval]:
    """--region (default: every contig) minus --exclude, merged and in reference order (named in messages)."""
    chosen = resolve_regions(regions, lengths, reference)
    if exclude:
        chosen = subtract(chosen, resolve_regions(exclude, lengths, reference))
    if not chosen:
        raise UserError(f"--region {' '.join(regions or ['(all)'])}: nothing left to simulate after --exclude")
    return chosen


def capture_targets(bed: str, regions: list[Interval], lengths: dict[str, int], reference: str) -> list[Interval]:
    """The capture targets of the BED that touch the simulated regions (checked against the reference)."""
    targets = resolve_targets(bed, lengths, reference)
    touching = [t for t in targets if subtract([t], regions) != [t]]
    if not touching:
        raise UserError(f"{bed}: no capture target inside the simulated regions")
    log.info("%d capture targets, %s bp", len(touching), f"{sum(t.length for t in touching):,}")
    return touching


def n_runs(sequence: str, offset: int) -> list[tuple[int, int]]:
    """[start, end) of each run of N, shifted by `offset`."""
    is_n = np.frombuffer(sequence.encode(), np.uint8) == ord("N")
    edges = np.flatnonzero(np.diff(np.concatenate([[0], is_n.astype(np.int8), [0]])))
    return [(offset + int(a), offset + int(b)) for a, b in zip(edges[::2], edges[1::2])]


def confident_regions(regions: list[Interval], fasta) -> list[Interval]:
    """Simulated regions cut at N runs, each piece minus CONFIDENT_EDGE bp at both ends."""
    gaps = []
    for region in regions:
        gaps.extend(Interval(region.contig, a, b) for a, b in n_runs(fetch_sequence(fasta, region), region.start))
    pieces = subtract(regions, gaps)
    trimmed = [Interval(p.contig, p.start + CONFIDENT_EDGE, p.end - CONFIDENT_EDGE) for p in pieces]
    return merge([t for t in trimmed if t.end > t.start], order=list(fasta.references))


# ----------------------------------------------------------------------------- outputs, staged and written


class _Stage:
    def __init__(self, prefix: str, workdir: str):
        self.prefix, self.workdir = prefix, workdir

    def path(self, suffix: str) -> str:
        return os.path.join(self.workdir, os.path.basename(self.prefix) + suffix)


@contextlib.contextmanager
def staged_outputs(prefix: str) -> Iterator[_Stage]:
    """Outputs are written in a hidden scratch folder next to them and renamed only when all succeeded."""
    directory = os.path.dirname(os.path.abspath(prefix))
    if not os.path.isdir(directory):
        raise UserError(f"{prefix}: output directory {directory} does not exist")
    workdir = tempfile.mkdtemp(prefix=f".{os.path.basename(prefix)}.", suffix=".tmp", dir=directory)
    try:
        with removed_on_error(workdir, prefix):  # a write on a full disk names no file: name the outputs
            stage = _Stage(prefix, workdir)
            yield stage
            for suffix in OUTPUT_SUFFIXES:
                os.replace(stage.path(suffix), prefix + suffix)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def write_bed(path: str, intervals: list[Interval]) -> None:
    with open(path, "w") as out:
        out.writelines(f"{iv.contig}\t{iv.start}\t{iv.end}\n" for iv in intervals)


def write_truth_vcf(path: str, variants: list[Variant], lengths: dict[str, int], opts: SimulationOptions) -> None:
    """Bgzipped, tabix-indexed VCF 4.2 with phased genotypes; `path` must end in .vcf.gz."""
    import pysam

    plain = path[: -len(".gz")]
    with open(plain, "w") as out:
        out.write("##fileformat=VCFv4.2\n")
        out.write(f"##source=deepflows simulate {__version__}\n")
        out.write(f"##deepflowsCommand={opts.command_line}\n")
        out.write(f"##reference=file:{opts.ref}\n")
        out.writelines(f"##contig=<ID={name},length={length}>\n" for name, length in lengths.items())
        out.write('##FORMAT=<ID=GT,Number=1,Type=String,Description="Phased genotype of the simulated sample">\n')
        out.write(f"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{opts.sample}\n")
        for v in variants:
            gt = "|".join(map(str, v.genotype))
            out.write(f"{v.contig}\t{v.start + 1}\t.\t{v.ref}\t{','.join(v.alts)}\t.\tPASS\t.\tGT\t{gt}\n")
    pysam.tabix_index(plain, preset="vcf", force=True)
