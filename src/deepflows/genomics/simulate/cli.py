"""`deepflows simulate`: a diploid sample's truth VCF, aligned Illumina-like reads and confident regions.

Writes PREFIX.bam (+ .bai), PREFIX.truth.vcf.gz (+ .tbi) and PREFIX.confident.bed; nothing on error.
"""

from __future__ import annotations

import argparse

from deepflows.arguments import finite_float, non_negative_float, seed
from deepflows.errors import UserError
from deepflows.genomics.simulate.external import ART_PROFILES, SIMULATORS
from deepflows.genomics.simulate.qualities import QUALITY_BINS
from deepflows.genomics.simulate.sample import OUTPUT_SUFFIXES
from deepflows.outputs import check_new_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--ref", required=True, metavar="FASTA", help="reference FASTA, plain or bgzipped (.fai built if missing)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--truth", metavar="VCF",
                        help="take the sample's genotypes from this VCF (one sample; plain, gzipped or bgzipped)")
    source.add_argument("--random-variants", action="store_true", help="draw a germline-like set of variants")
    add("--variant-rate", type=finite_float, default=1e-3, metavar="P",
        help="variants per bp with --random-variants (default: %(default)s)")
    add("--region", nargs="+", action="extend", metavar="REGION",
        help="chr, chr:start-end (1-based inclusive, commas allowed) or a BED file; default: every contig")
    add("--exclude", nargs="+", action="extend", metavar="REGION", help="regions or BED files to leave out")
    add("--depth", type=finite_float, default=30.0, help="mean depth over both haplotypes (default: %(default)s)")
    add("--read-length", type=int, default=150, help="bp per read (default: %(default)s)")
    add("--insert-mean", type=finite_float, default=400.0, help="mean fragment length (default: %(default)s)")
    add("--insert-sd", type=finite_float, default=60.0, help="fragment length SD (default: %(default)s)")
    add("--error-rate-scale", type=finite_float, default=1.0, metavar="X",
        help="multiply the random substitution and indel error rates, not the systematic ones (default: %(default)s)")
    add("--hotspot-rate", type=finite_float, default=3e-3, metavar="P",
        help="fraction of positions with a recurring, often strand-specific substitution error (default: %(default)s)")
    add("--hotspot-beta", type=finite_float, nargs=2, metavar=("A", "B"),
        help="a hotspot errs in a Beta(A, B) fraction of its reads; a smaller B makes stronger hotspots"
             " (default: 3 30, mean 0.09)")
    add("--homopolymer-slip-rate", type=finite_float, default=1e-3, metavar="P",
        help="per-read slip probability in a 5 bp homopolymer, growing with (length-4)^2 (default: %(default)s)")
    library = parser.add_argument_group("library (default: PCR-free whole genome)")
    library.add_argument("--targets", metavar="BED",
                         help="capture targets (e.g. from `deepflows capture-targets`): reads come from fragments "
                              "that overlap them (hybrid capture, an exome); --depth is then the targets' mean")
    library.add_argument("--target-depth-sigma", type=non_negative_float, default=0.6, metavar="S",
                         help="with --targets: SD of the log capture efficiency of a target (default: %(default)s)")
    library.add_argument("--off-target-fraction", type=non_negative_float, default=0.04, metavar="F",
                         help="with --targets: fraction of the fragments from outside any target "
                              "(default: %(default)s)")
    library.add_argument("--gc-bias", type=non_negative_float, default=0.0, metavar="B",
                         help="fragments 20 points of GC away from 45%% keep exp(-B) of their coverage "
                              "(default: %(default)s, none)")
    library.add_argument("--duplicate-rate", type=non_negative_float, default=0.0, metavar="F",
                         help="expected fraction of pairs that are PCR duplicates of another (default: %(default)s)")
    library.add_argument("--pcr-stutter-rate", type=non_negative_float, default=0.0, metavar="P",
                         help="PCR stutter per fragment in a repeat: P per unit beyond 3 (homopolymers: per base "
                              "beyond 5), one unit lost or gained in every copy (default: %(default)s, none)")
    library.add_argument("--mark-duplicates", action="store_true",
                         help="mark duplicates in the BAM with samtools markdup, as a PCR+ or exome pipeline does")
    source = parser.add_argument_group("read simulator (default: deepflows' own read model)")
    source.add_argument("--simulator", choices=SIMULATORS, default="deepflows",
                        help="draw the reads with deepflows' model, or with ART (art_illumina), dwgsim or Mason "
                             "(mason_simulator) over the same haplotypes: other error models; the error, "
                             "artifact and library options above are deepflows' own (default: %(default)s)")
    source.add_argument("--art-profile", choices=sorted(ART_PROFILES), default="HS25",
                        help="with --simulator art: the instrument's built-in profile (default: %(default)s)")
    source.add_argument("--quality-bins", choices=sorted(QUALITY_BINS), default="none",
                        help="write base qualities binned as NovaSeq (2/12/23/37) or HiSeq X/4000 (8 bins) do; "
                             "the reads themselves are unchanged (default: %(default)s)")
    add("--seed", type=seed, default=1, help="random seed (default: %(default)s)")
    add("--sample", default="simulated", help="sample name in the VCF and the BAM @RG (default: %(default)s)")
    add("--aligner", choices=("mappy", "bwa"), default="mappy",
        help="minimap2 -x sr through mappy, or bwa mem (default: %(default)s)")
    add("--bwa-index", metavar="PREFIX",
        help="with --aligner bwa: a `bwa index -p PREFIX` of --ref (default: --ref itself, indexed beside it "
             "if it has no index)")
    add("--threads", type=int, default=1, help="threads for indexing, bwa mem and sorting (default: %(default)s)")
    add("--out-prefix", required=True, metavar="PREFIX", help="output path prefix")


def run(args: argparse.Namespace) -> None:
    from deepflows.genomics.simulate.external import ExternalSimulator
    from deepflows.genomics.simulate.library import LibraryModel
    from deepflows.genomics.simulate.reads import ReadModel
    from deepflows.genomics.simulate.sample import SimulationOptions, simulate
    from deepflows.genomics.simulate.variants import VariantSpectrum

    _check(args)
    artifacts = {"hotspot_beta": tuple(args.hotspot_beta)} if args.hotspot_beta else {}
    simulate(SimulationOptions(
        ref=args.ref,
        out_prefix=args.out_prefix,
        regions=args.region,
        exclude=args.exclude,
        truth=args.truth,
        spectrum=VariantSpectrum(rate=args.variant_rate),
        reads=ReadModel(depth=args.depth, read_length=args.read_length, insert_mean=args.insert_mean,
                        insert_sd=args.insert_sd, error_rate_scale=args.error_rate_scale,
                        hotspot_rate=args.hotspot_rate, homopolymer_slip_rate=args.homopolymer_slip_rate,
                        library=LibraryModel(gc_bias=args.gc_bias, duplicate_rate=args.duplicate_rate,
                                             stutter_rate=args.pcr_stutter_rate,
                                             capture_depth_sigma=args.target_depth_sigma,
                                             off_target_fraction=args.off_target_fraction),
                        **artifacts),
        targets=args.targets,
        mark_duplicates=args.mark_duplicates,
        simulator=None if args.simulator == "deepflows" else ExternalSimulator(args.simulator, args.art_profile),
        quality_bins=args.quality_bins,
        seed=args.seed,
        sample=args.sample,
        aligner=args.aligner,
        bwa_index=args.bwa_index,
        threads=args.threads,
        command_line=getattr(args, "command_line", "deepflows simulate"),
    ))


def _check(args: argparse.Namespace) -> None:
    problems = [
        (args.depth <= 0, f"--depth {args.depth}: must be positive"),
        (not 30 <= args.read_length <= 1000, f"--read-length {args.read_length}: must be 30-1000"),
        (args.insert_mean < args.read_length, f"--insert-mean {args.insert_mean}: must be at least the read length"),
        (args.insert_sd < 0, f"--insert-sd {args.insert_sd}: must not be negative"),
        (args.error_rate_scale < 0, f"--error-rate-scale {args.error_rate_scale}: must not be negative"),
        (not 0 <= args.hotspot_rate <= 0.05, f"--hotspot-rate {args.hotspot_rate}: must be 0-0.05"),
        (args.hotspot_beta and min(args.hotspot_beta) <= 0, f"--hotspot-beta {args.hotspot_beta}: A and B must be positive"),
        (not 0 <= args.homopolymer_slip_rate <= 0.05,
         f"--homopolymer-slip-rate {args.homopolymer_slip_rate}: must be 0-0.05"),
        (not 0 <= args.variant_rate <= 0.05, f"--variant-rate {args.variant_rate}: must be 0-0.05"),
        (args.duplicate_rate >= 0.9, f"--duplicate-rate {args.duplicate_rate}: must be below 0.9"),
        (args.off_target_fraction >= 0.9, f"--off-target-fraction {args.off_target_fraction}: must be below 0.9"),
        (args.pcr_stutter_rate > 0.1, f"--pcr-stutter-rate {args.pcr_stutter_rate}: must be 0-0.1"),
        (args.gc_bias > 10, f"--gc-bias {args.gc_bias}: must be 0-10"),
        (args.target_depth_sigma > 3, f"--target-depth-sigma {args.target_depth_sigma}: must be 0-3"),
        (args.bwa_index and args.aligner != "bwa", f"--bwa-index {args.bwa_index}: needs --aligner bwa"),
        (args.threads < 1, f"--threads {args.threads}: must be at least 1"),
        (not args.sample or any(c.isspace() for c in args.sample), f"--sample {args.sample!r}: no spaces allowed"),
    ]
    library = [flag for flag, value in (("--targets", args.targets), ("--gc-bias", args.gc_bias),
                                        ("--duplicate-rate", args.duplicate_rate),
                                        ("--pcr-stutter-rate", args.pcr_stutter_rate)) if value]  # fmt: skip
    problems.append((args.simulator != "deepflows" and library,
                     f"{' '.join(library)}: library preparation is simulated by --simulator deepflows only"))
    for failed, message in problems:
        if failed:
            raise UserError(message)
    for suffix in OUTPUT_SUFFIXES:
        check_new_output(args.out_prefix + suffix, "--out-prefix")
