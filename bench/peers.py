#!/usr/bin/env python3
"""Variant callers side by side: each calls the same reads, `deepflows benchmark` scores every VCF.

Callers: deepflows (make-examples -> call-variants -> postprocess with the shipped model, or --model),
bcftools (`mpileup -a AD,DP | call -mv`), freebayes, and, where it exists for the case, DeepVariant's own
published output (scored only; it was not run here). Each caller runs pinned to one
CPU; wall and CPU seconds come from wait4(). One table, caller x SNP/INDEL x TP/FP/FN/precision/recall/F1,
printed as Markdown and written as JSON.

Cases:
  na12878   real NA12878 reads, GIAB truth, chr20:10,000,001-10,010,000 (../shared/data)
  sim-eval  the simulated evaluation set (GRCh38 chr20:4.9-5.2 Mb and 8.9-9.2 Mb, 30x 2x150), made by
            `snakemake --configfile config/train-hg002-grch38.yaml --cores 2` (target training_data)
  sim-eval2 the same regions and settings drawn again (seed 23): how much one draw of reads moves the figures
  sim-hard  the harder evaluation set (20x 2x100, doubled random error rate), same target
  sim-clean the sim-eval regions and seed without systematic artifacts (no error hotspots or homopolymer
            slippage: only random, quality-driven errors), same target

    python bench/peers.py [--cases na12878,sim-eval,sim-eval2,sim-hard,sim-clean] [--model DIR]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import shutil
import subprocess
from pathlib import Path

from benchlib import (
    DATA,
    OUT,
    ROOT,
    SHIPPED_MODEL,
    call_and_postprocess,
    deepflows,
    featurizer_flags,
    measure,
)

EVAL = ROOT / "results" / "hg002-grch38" / "eval"


def cases() -> dict[str, dict]:
    table = {
        "na12878": {
            "reads": DATA / "NA12878_S1.chr20.10_10p1mb.bam",
            "ref": DATA / "ucsc.hg19.chr20.unittest.fasta.gz",
            "truth": DATA / "test_nist.b37_chr20_100kbp_at_10mb.vcf.gz",
            "confident": DATA / "test_nist.b37_chr20_100kbp_at_10mb.bed",
            "regions": ["chr20:10,000,001-10,010,000"],
            "published": {"deepvariant (golden)": DATA / "deepvariant_golden/golden.postprocess_single_site_output.vcf"},
        },
    }  # fmt: skip
    for name, folder in (("sim-eval", "standard"), ("sim-eval2", "standard2"), ("sim-hard", "hard"),
                         ("sim-clean", "clean")):  # fmt: skip
        prefix = EVAL / folder / "reads"
        table[name] = {
            "reads": Path(f"{prefix}.bam"),
            "ref": DATA / "grch38.chr20_and_21_10M.fa.gz",
            "truth": Path(f"{prefix}.truth.vcf.gz"),
            "confident": Path(f"{prefix}.confident.bed"),
            "regions": ["chr20:4,900,001-5,200,000", "chr20:8,900,001-9,200,000"],
            "published": {},
        }
    return table


def plain_reference(fasta: Path) -> Path:
    """freebayes reads only uncompressed FASTA: a plain, indexed copy is made once under bench/out."""
    plain = OUT / (fasta.name.removesuffix(".gz") if fasta.suffix == ".gz" else fasta.name)
    if not Path(f"{plain}.fai").exists():
        OUT.mkdir(parents=True, exist_ok=True)
        with (gzip.open(fasta, "rb") if fasta.suffix == ".gz" else open(fasta, "rb")) as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst)
        subprocess.run(["samtools", "faidx", str(plain)], check=True)
    return plain


def callers(case: dict, work: Path, model: Path) -> dict[str, str]:
    """Shell commands, one per caller, each writing `work/<caller>.vcf.gz`."""
    ref, reads = case["ref"], case["reads"]
    bcf_regions = ",".join(r.replace(",", "") for r in case["regions"])
    fb_regions = " ".join(f"--region {r.replace(',', '')}" for r in case["regions"])
    plain = plain_reference(ref)
    call, post = call_and_postprocess([work / "examples.zarr"], model, work / "probs.zarr", ref,
                                      work / "deepflows.vcf.gz", logs=work)  # fmt: skip
    return {
        "deepflows": f"{deepflows()} make-examples --reads {reads} --ref {ref} --regions {bcf_regions.replace(',', ' ')}"
                     f" --sample sample --out {work}/examples.zarr{featurizer_flags(model)} 2> {work}/make_examples.log"
                     f" && {call} && {post}",
        "bcftools": f"bcftools mpileup -f {ref} -r {bcf_regions} -a AD,DP {reads} 2>/dev/null"
                    f" | bcftools call -mv -Oz -o {work}/bcftools.vcf.gz",
        "freebayes": f"freebayes -f {plain} {fb_regions} {reads} | bgzip > {work}/freebayes.vcf.gz",
    }  # fmt: skip


def score(case: dict, vcf: Path, out: Path) -> dict:
    """PASS rows of `deepflows benchmark`, by type."""
    regions = [arg for r in case["regions"] for arg in ("--regions", r)]
    with open(out.with_suffix(".log"), "w") as log:
        subprocess.run([deepflows(), "benchmark", "--truth", str(case["truth"]), "--confident", str(case["confident"]),
                        "--query", str(vcf), "--ref", str(case["ref"]), *regions, "--out", str(out)],
                       check=True, stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    rows = {}
    with open(out / "summary.csv") as handle:
        for row in csv.DictReader(handle):
            if row["Filter"] == "PASS" and row.get("Subset", "*") in ("*", ""):
                rows[row["Type"]] = {
                    "TP": int(row["TRUTH.TP"]),
                    "FP": int(row["QUERY.FP"]),
                    "FN": int(row["TRUTH.FN"]),
                    **{k: float(row[f"METRIC.{m}"]) if row[f"METRIC.{m}"] not in ("", "nan") else None
                       for k, m in (("precision", "Precision"), ("recall", "Recall"), ("F1", "F1_Score"))},
                }  # fmt: skip
    return rows


def run_case(name: str, case: dict, model: Path) -> list[dict]:
    for key in ("reads", "ref", "truth", "confident"):
        if not Path(case[key]).exists():
            raise SystemExit(f"[{name}] {case[key]}: not found" +
                             ("" if name == "na12878" else "; make it with the training_data target (see --help)"))  # fmt: skip
    work = OUT / "peers" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results = []
    for caller, command in callers(case, work, model).items():
        timing = measure(command)
        results.append({"case": name, "caller": caller, **timing,
                        "scores": score(case, work / f"{caller}.vcf.gz", work / f"{caller}.benchmark")})  # fmt: skip
    for caller, vcf in case["published"].items():
        results.append({"case": name, "caller": caller, "wall_s": None, "cpu_s": None, "peak_rss_mb": None,
                        "scores": score(case, vcf, work / f"{caller.split()[0]}.benchmark")})  # fmt: skip
    return results


def markdown(results: list[dict]) -> str:
    lines = ["| case | caller | type | TP | FP | FN | precision | recall | F1 | wall s | CPU s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip

    def fmt(value, spec):
        return "n/a" if value is None else format(value, spec)

    for r in results:
        for kind in ("SNP", "INDEL"):
            s = r["scores"].get(kind, {})
            lines.append(f"| {r['case']} | {r['caller']} | {kind} | {s.get('TP', '')} | {s.get('FP', '')} | "
                         f"{s.get('FN', '')} | {fmt(s.get('precision'), '.4f')} | {fmt(s.get('recall'), '.4f')} | "
                         f"{fmt(s.get('F1'), '.4f')} | {fmt(r['wall_s'], '.1f')} | {fmt(r['cpu_s'], '.1f')} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)  # fmt: skip
    parser.add_argument("--cases", default="na12878,sim-eval,sim-eval2,sim-hard,sim-clean")
    parser.add_argument("--json", default=str(OUT / "peers.json"))
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL, help="deepflows model directory")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: not found; the peers table runs on the shared real data")
    table = cases()
    results = [row for name in args.cases.split(",") for row in run_case(name, table[name], args.model)]
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"\n(PASS rows of `deepflows benchmark`; each caller on one CPU; JSON: {args.json})")


if __name__ == "__main__":
    main()
