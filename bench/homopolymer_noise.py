#!/usr/bin/env python3
"""How much a read set stutters at homopolymers, and how a real het deletion there looks: what separates a
clean library from a stuttering one.

For each case of bench/peers.py (its reads, truth, confident regions and called regions): every reference
run of one base of at least --min-run bases inside the confident regions, and the reads that span it with
--anchor reference bases either side (the reads the pileups leave out, and MAPQ < 10, left out), counted as
make-examples counts them for the sample noise (deepflows.genomics.examples.sample_noise). A read's length
change there is the sum of its CIGAR insertions and deletions within the run.
Runs with no truth variant within 5 bases are *invariant*: any length change is an error of the library or
the read simulator. Runs whose only truth variant is a het one-base deletion are *het deletions*. Printed
per case: the share of spanning reads one base shorter at invariant runs (the noise a caller must ignore)
and at het deletions (the signal it must call), each as quantiles over runs.

    python bench/homopolymer_noise.py [--cases mason,sim-eval,sim-clean,pcr-plus,tune-pcr] [--min-run 10]
"""

from __future__ import annotations

import argparse

import numpy as np
from peers import cases

from deepflows.genomics.examples.sample_noise import homopolymer_runs, length_changes
from deepflows.genomics.io.regions import parse_region, read_bed

QUANTILES = (0.05, 0.5, 0.95)
INVARIANT, HET_DEL = "invariant", "het deletion"


def inside(intervals, start: int, end: int) -> bool:
    return any(iv.start <= start and end <= iv.end for iv in intervals)


def run_class(vcf, contig: str, start: int, end: int) -> str | None:
    near = list(vcf.fetch(contig, start - 5, end + 5))
    if not near:
        return INVARIANT
    if len(near) > 1 or len(near[0].alts or ()) != 1:
        return None
    v = near[0]
    genotype = tuple(sorted(next(iter(v.samples.values()))["GT"]))
    return HET_DEL if genotype == (0, 1) and len(v.ref) == 2 and len(v.alts[0]) == 1 else None


def measure_case(case: dict, min_run: int, anchor: int, min_reads: int) -> dict[str, list[float]]:
    import pysam

    shorter: dict[str, list[float]] = {INVARIANT: [], HET_DEL: []}
    confident: dict[str, list] = {}
    for iv in read_bed(case["confident"]):
        confident.setdefault(iv.contig, []).append(iv)
    with (pysam.FastaFile(str(case["ref"])) as fasta, pysam.AlignmentFile(str(case["reads"])) as bam,
          pysam.VariantFile(str(case["truth"])) as vcf):  # fmt: skip
        lengths = dict(zip(fasta.references, fasta.lengths))
        for region in (parse_region(text, lengths, case["ref"]) for text in case["regions"]):
            for start, end in homopolymer_runs(fasta.fetch(region.contig, region.start, region.end), region.start,
                                               min_run):  # fmt: skip
                kind = run_class(vcf, region.contig, start, end)
                if kind is None or not inside(confident.get(region.contig, []), start - anchor, end + anchor):
                    continue
                changes = length_changes(bam, region.contig, start, end, anchor)
                if len(changes) >= min_reads:
                    shorter[kind].append(sum(c == -1 for c in changes) / len(changes))
    return shorter


def quantiles(values: list[float]) -> str:
    return " / ".join(f"{q:.1%}" for q in np.quantile(values, QUANTILES)) if values else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="mason,sim-eval,sim-clean,pcr-plus,tune30,tune-pcr")
    parser.add_argument("--min-run", type=int, default=10, help="shortest homopolymer run counted")
    parser.add_argument("--anchor", type=int, default=3, help="reference bases a read must cover either side")
    parser.add_argument("--min-reads", type=int, default=10, help="spanning reads a run needs to be counted")
    args = parser.parse_args(argv)
    table = cases()
    wanted = args.cases.split(",")
    unknown = [c for c in wanted if c not in table or table[c]["targets"] is not None or c.startswith("na12878")]
    if unknown:
        parser.error(f"unknown or unsupported case {unknown[0]} (whole-region simulated cases only)")
    print(f"Reads one base shorter at homopolymer runs of >= {args.min_run} bases, quantiles "
          f"{' / '.join(f'{q:.0%}' for q in QUANTILES)} over runs\n")  # fmt: skip
    print("| case | invariant runs | one base shorter there | het 1-bp deletions | one base shorter there |")
    print("|---|---:|---|---:|---|")
    for name in wanted:
        shorter = measure_case(table[name], args.min_run, args.anchor, args.min_reads)
        print(f"| {name} | {len(shorter[INVARIANT])} | {quantiles(shorter[INVARIANT])} | {len(shorter[HET_DEL])} "
              f"| {quantiles(shorter[HET_DEL])} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
