#!/usr/bin/env python3
"""GQ calibration: GQ bins of our calls against the observed genotype error rate.

A call is every record postprocess wrote inside the confident regions, RefCall and LowQual included
(a hom-ref call is a genotype too). Its genotype is right when, for each of its candidate alleles
(normalised: left-aligned and trimmed), the number of copies it calls equals the number the truth has.
Truth variants that were never candidates are not genotype errors and are not counted here (they are
the benchmark's false negatives). A calibrated GQ has observed error rates near 10^(-GQ/10).

    python bench/gq_calibration.py                       # the sim-eval calls of bench/peers.py
    python bench/gq_calibration.py --calls VCF --truth VCF --confident BED --ref FASTA
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

import pysam
from benchlib import DATA, OUT, ROOT

from deepflows.genomics.variants import Regions, Variant, VcfReader, normalize

EVAL = ROOT / "results" / "hg002-grch38" / "eval" / "standard"
BINS = (0, 5, 10, 15, 20, 30, 40, 50, 60)


def allele_key(fasta, contig: str, start: int, ref: str, alt: str) -> tuple:
    v = normalize(Variant(contig, start, ref, (alt,)), fasta)
    return v.contig, v.start, v.ref, v.alts[0]


def truth_dosages(truth: str, fasta, contigs: list[str]) -> Counter:
    dosage: Counter = Counter()
    with VcfReader(truth) as reader:
        for contig in contigs:
            for v in reader.fetch(contig):
                for allele in v.genotype or ():
                    if allele > 0:
                        dosage[allele_key(fasta, v.contig, v.start, v.ref, v.alts[allele - 1])] += 1
    return dosage


def calls(path: str, fasta, confident: Regions):
    """(GQ, correct-or-not inputs) per record: GQ and {allele key: called copies}."""
    with pysam.VariantFile(path) as vcf:
        for rec in vcf:
            if not confident.overlaps(rec.contig, rec.start, rec.stop):
                continue
            sample = rec.samples[0]
            gq, gt = sample.get("GQ"), sample.get("GT")
            if gq is None or gt is None or None in gt:
                continue
            called = Counter(gt)
            yield gq, {allele_key(fasta, rec.contig, rec.start, rec.ref, alt): called[i + 1]
                       for i, alt in enumerate(rec.alts)}  # fmt: skip


def calibration(calls_vcf: str, truth: str, confident_bed: str, ref: str) -> list[dict]:
    fasta = pysam.FastaFile(ref)
    confident = Regions.from_bed(confident_bed)
    dosage = truth_dosages(truth, fasta, confident.contigs)
    bins = {b: {"n": 0, "errors": 0, "expected": 0.0} for b in BINS}
    for gq, alleles in calls(calls_vcf, fasta, confident):
        b = max(x for x in BINS if x <= gq)
        bins[b]["n"] += 1
        bins[b]["errors"] += any(dosage.get(key, 0) != copies for key, copies in alleles.items())
        bins[b]["expected"] += 10 ** (-gq / 10)
    rows = []
    for lo, hi in zip(BINS, (*BINS[1:], None)):
        n, errors = bins[lo]["n"], bins[lo]["errors"]
        if n == 0:
            continue
        observed = errors / n
        rows.append({"gq": f"{lo}-{hi - 1}" if hi else f">={lo}", "calls": n, "errors": errors,
                     "observed_error": observed, "expected_error": bins[lo]["expected"] / n,
                     "observed_phred": -10 * math.log10(observed) if observed else None})  # fmt: skip
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| GQ | calls | genotype errors | observed error rate | expected (mean 10^(-GQ/10)) | observed as phred |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        phred = "n/a (no errors)" if r["observed_phred"] is None else f"{r['observed_phred']:.1f}"
        lines.append(f"| {r['gq']} | {r['calls']} | {r['errors']} | {r['observed_error']:.4f} | "
                     f"{r['expected_error']:.4f} | {phred} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)  # fmt: skip
    parser.add_argument("--calls", default=str(OUT / "peers" / "sim-eval" / "deepflows.vcf.gz"))
    parser.add_argument("--truth", default=str(EVAL / "reads.truth.vcf.gz"))
    parser.add_argument("--confident", default=str(EVAL / "reads.confident.bed"))
    parser.add_argument("--ref", default=str(DATA / "grch38.chr20_and_21_10M.fa.gz"))
    parser.add_argument("--json", default=str(OUT / "gq_calibration.json"))
    args = parser.parse_args()
    for path in (args.calls, args.truth, args.confident, args.ref):
        if not Path(path).exists():
            raise SystemExit(f"{path}: not found (run bench/peers.py --cases sim-eval first for the default calls)")
    rows = calibration(args.calls, args.truth, args.confident, args.ref)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows))
    print(f"\n(calls: {args.calls}; truth: {args.truth}; JSON: {args.json})")


if __name__ == "__main__":
    main()
