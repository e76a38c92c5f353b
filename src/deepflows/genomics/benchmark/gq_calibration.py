"""`deepflows gq-calibration`: GQ bins of a call set against the observed genotype error rate.

A call is every record inside the confident regions, RefCall and LowQual included (a hom-ref call is a
genotype too). Its genotype is right when, for each of its candidate alleles (normalised: left-aligned and
trimmed), the number of copies it calls equals the number the truth has. Truth variants that were never
candidates are not genotype errors and are not counted here (they are the benchmark's false negatives).
A calibrated GQ has observed error rates near 10^(-GQ/10).

    deepflows gq-calibration --calls calls.vcf.gz --truth truth.vcf.gz --confident truth.bed --ref ref.fa \
        --out calibration.tsv [--plot calibration.png]
"""

from __future__ import annotations

import argparse
import math
from collections import Counter

from deepflows import tables
from deepflows.errors import UserError
from deepflows.inputs import require_file
from deepflows.outputs import check_figure_name, check_new_output, remove, save_figure

BINS = (0, 5, 10, 15, 20, 30, 40, 50, 60)
COLUMNS = ("gq", "calls", "errors", "observed_error", "expected_error", "observed_phred")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calls", required=True, metavar="VCF", help="calls with GT and GQ (e.g. from postprocess)")
    p.add_argument("--truth", required=True, metavar="VCF", help="truth VCF, indexed")
    p.add_argument("--confident", required=True, metavar="BED", help="confident regions of the truth")
    p.add_argument("--ref", required=True, metavar="FASTA", help="reference FASTA (indexed)")
    p.add_argument("--out", required=True, metavar="TSV", help="one row per GQ bin")
    p.add_argument("--plot", metavar="PNG", help="observed vs expected error rate per bin")


def run(args: argparse.Namespace) -> None:
    for path, what in ((args.calls, "calls VCF"), (args.truth, "truth VCF"), (args.confident, "confident BED"),
                       (args.ref, "reference FASTA")):  # fmt: skip
        require_file(path, what)
    check_new_output(args.out)
    if args.plot:
        check_new_output(args.plot, "--plot")
    if args.plot:
        check_figure_name(args.plot, "--plot")
    rows = calibration(args.calls, args.truth, args.confident, args.ref)
    if args.plot:
        plot(rows, args.plot)
    try:
        write_tsv(rows, args.out)
    except BaseException:  # both outputs or neither
        if args.plot:
            remove(args.plot)
        raise


def allele_key(fasta, contig: str, start: int, ref: str, alt: str, path: str = "") -> tuple:
    """The normalised (contig, start, ref, alt); a REF that is not the reference's is refused, naming `path`."""
    from deepflows.genomics.io.variants import Variant, normalize

    try:
        v = normalize(Variant(contig, start, ref, (alt,)), fasta)
    except ValueError as err:
        raise UserError(f"{path}: {err}; is it for reference {fasta.filename.decode()}?") from None
    return v.contig, v.start, v.ref, v.alts[0]


def truth_dosages(truth: str, fasta, contigs: list[str]) -> Counter:
    """Copies of each normalised truth allele."""
    from deepflows.genomics.io.variants import VcfReader

    dosage: Counter = Counter()
    with VcfReader(truth) as reader:
        for contig in contigs:
            for v in reader.fetch(contig):
                for allele in v.genotype or ():
                    if allele > 0:
                        dosage[allele_key(fasta, v.contig, v.start, v.ref, v.alts[allele - 1], truth)] += 1
    return dosage


def called_dosages(path: str, fasta, confident):
    """(GQ, {normalised candidate allele: called copies}) per genotyped record inside `confident`."""
    from deepflows.genomics.io.variants import genotype_sample, open_variant_file, vcf_records

    with open_variant_file(path, indexed=False) as vcf:
        index = genotype_sample(vcf, path)
        for rec in vcf_records(vcf, path):
            if not confident.overlaps(rec.contig, rec.start, rec.stop):
                continue
            sample = rec.samples[index]
            gq, gt = sample.get("GQ"), sample.get("GT")
            if gq is None or gt is None or None in gt:
                continue
            called = Counter(gt)
            yield gq, {allele_key(fasta, rec.contig, rec.start, rec.ref, alt, path): called[i + 1]
                       for i, alt in enumerate(rec.alts)}  # fmt: skip


def calibration(calls_vcf: str, truth: str, confident_bed: str, ref: str) -> list[dict]:
    from deepflows.genomics.io.hts import open_reference
    from deepflows.genomics.io.variants import Regions

    fasta = open_reference(ref)
    confident = Regions.from_bed(confident_bed, needed_for="no call would be counted")
    dosage = truth_dosages(truth, fasta, confident.contigs)
    bins = {b: {"n": 0, "errors": 0, "expected": 0.0} for b in BINS}
    for gq, alleles in called_dosages(calls_vcf, fasta, confident):
        b = bins[max(x for x in BINS if x <= gq)]
        b["n"] += 1
        b["errors"] += any(dosage.get(key, 0) != copies for key, copies in alleles.items())
        b["expected"] += 10 ** (-gq / 10)
    rows = []
    for lo, hi in zip(BINS, (*BINS[1:], None)):
        n, errors = bins[lo]["n"], bins[lo]["errors"]
        if n:
            observed = errors / n
            rows.append({"gq": f"{lo}-{hi - 1}" if hi else f">={lo}", "calls": n, "errors": errors,
                         "observed_error": observed, "expected_error": bins[lo]["expected"] / n,
                         "observed_phred": -10 * math.log10(observed) if observed else None})  # fmt: skip
    return rows


def write_tsv(rows: list[dict], out: str) -> None:
    tables.write_tsv(rows, COLUMNS, out)


def markdown(rows: list[dict]) -> str:
    lines = ["| GQ | calls | genotype errors | observed error rate | expected (mean 10^(-GQ/10)) | observed as phred |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        phred = "n/a (no errors)" if r["observed_phred"] is None else f"{r['observed_phred']:.1f}"
        lines.append(f"| {r['gq']} | {r['calls']} | {r['errors']} | {r['observed_error']:.4f} | "
                     f"{r['expected_error']:.4f} | {phred} |")  # fmt: skip
    return "\n".join(lines)


def plot(rows: list[dict], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-4  # bins without errors are drawn at the floor, open markers
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for r in rows:
        observed = r["observed_error"] or floor
        ax.plot(r["expected_error"], observed, "o", mfc="C0" if r["errors"] else "none", mec="C0",
                ms=4 + 2 * math.log10(r["calls"]))  # fmt: skip
    ax.plot([floor, 1], [floor, 1], "k--", lw=0.8, label="calibrated")
    ax.set(xscale="log", yscale="log", xlabel="expected error (mean 10^(-GQ/10))", ylabel="observed genotype error",
           title="GQ calibration")  # fmt: skip
    ax.legend(loc="upper left")
    fig.tight_layout()
    save_figure(fig, out, dpi=120)
    plt.close(fig)
