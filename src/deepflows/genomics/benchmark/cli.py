"""`deepflows benchmark`: compare a VCF with a truth set and its confident regions, hap.py style.

Writes DIR/summary.csv (hap.py's columns; SNP and INDEL x ALL and PASS, and per stratification with a
leading Subset column), DIR/summary.json (the same figures, matching statistics, inputs) and
DIR/errors.tsv (every FN and FP with a reason); nothing on error. A new DIR is written under a temporary name
and renamed when complete; an existing DIR (Snakemake makes the folder of a rule's outputs) may not hold a
benchmark already: results are never overwritten.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deepflows.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--truth", required=True, metavar="VCF", help="truth VCF (PASS records only), indexed or not")
    add("--confident", required=True, metavar="BED", help="confident regions of the truth set")
    add("--query", required=True, metavar="VCF",
        help="calls to assess, plain or bgzipped; an unindexed file is indexed as a temporary copy")
    add("--truth-sample", metavar="NAME", help="the truth VCF's sample to compare (needed when it has several)")
    add("--query-sample", metavar="NAME", help="the query VCF's sample to assess (needed when it has several)")
    add("--ref", required=True, metavar="FASTA", help="reference FASTA, plain or bgzipped (.fai built if missing)")
    add("--regions", nargs="+", action="extend", metavar="REGION",
        help="only compare records overlapping these: chr, chr:start-end (1-based inclusive) or a BED file")
    add("--targets", metavar="BED",
        help="only compare records overlapping these capture targets (an exome's), within --regions when given")
    add("--stratify", nargs="+", action="extend", default=[], metavar="NAME=BED",
        help="also count the records overlapping BED, in rows with Subset=NAME")
    add("--max-gap", type=int, default=30, metavar="BP",
        help="records this close (indels over their whole repeat) are compared as haplotypes (default: %(default)s)")
    add("--max-calls", type=int, default=8, metavar="N",
        help="records per side a cluster may have for the exhaustive haplotype search; larger clusters fall "
             "back to allele-exact matching (default: %(default)s)")  # fmt: skip
    add("--out", required=True, metavar="DIR", help="output directory")


def parse_stratify(specs: list[str]) -> list[tuple[str, str]]:
    """`NAME=BED` (or just BED, named after its file) -> [(name, path)], names unique."""
    strata: list[tuple[str, str]] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name.removesuffix(".gz").removesuffix(".bed"), spec
        if not name or not path or name == "*" or any(c in name for c in ",\t\n"):
            raise UserError(f"--stratify {spec!r}: expected NAME=BED with a name free of commas, tabs and '*'")
        if name in (n for n, _ in strata):
            raise UserError(f"--stratify {spec!r}: the name {name!r} is used twice")
        strata.append((name, path))
    return strata


OUTPUTS = ("summary.csv", "summary.json", "errors.tsv")


def check_out(out: str) -> Path:
    """--out before any work: a new directory, or an existing one that holds no benchmark output yet."""
    from deepflows.outputs import check_new_output, check_output_dir

    out = Path(out)
    if not out.is_dir():
        return check_new_output(out)
    found = [name for name in OUTPUTS if (out / name).exists()]
    if found:
        raise UserError(f"{out}: already exists and holds a benchmark ({found[0]}); remove it or choose another --out")
    return check_output_dir(out)


def run(args: argparse.Namespace) -> None:
    from deepflows.genomics.benchmark.compare import BenchmarkOptions, Limits, run_benchmark
    from deepflows.outputs import output_directory

    out = check_out(args.out)
    if args.max_gap < 0:
        raise UserError(f"--max-gap {args.max_gap}: must not be negative")
    if not 1 <= args.max_calls <= 16:
        raise UserError(f"--max-calls {args.max_calls}: must be 1-16 (the search doubles with each)")
    options = BenchmarkOptions(
        truth=args.truth,
        confident=args.confident,
        query=args.query,
        ref=args.ref,
        regions=args.regions,
        targets=args.targets,
        stratify=parse_stratify(args.stratify),
        limits=Limits(max_gap=args.max_gap, max_calls=args.max_calls),
        truth_sample=args.truth_sample,
        query_sample=args.query_sample,
    )
    command_line = getattr(args, "command_line", "deepflows benchmark")
    with output_directory(out) as where:
        run_benchmark(options, where, command_line)
