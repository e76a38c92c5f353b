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
  pcr-plus  a PCR+ WGS library at 30x (GC bias, PCR duplicates marked with samtools markdup, PCR stutter in
            homopolymers and short tandem repeats), the sim-eval regions, same target; pcr-plus2 drawn again
  na12878-binned  the NA12878 reads with their base qualities binned as a NovaSeq writes them (2/12/23/37)
  art       ART (HiSeq 2500 profile) 2x150 at 30x over the sim-eval regions, aligned with bwa mem: reads of
            an independent simulator; art-binned the very same reads with NovaSeq-binned qualities. Made by
            `snakemake --configfile config/train-hg002-grch38-mixed.yaml --cores 2 training_data`
  mason     Mason (seqan) 2x150 at 30x, bwa mem, same regions: a simulator no model was trained on;
            mason-binned the same reads binned, mason2 drawn again; same target as art
  wes       a simulated exome in the sim-eval regions (exon-like capture targets covering 30% of them, 100x
            on-target, log-normal depth between targets, off-target reads, duplicates marked), same target;
            every caller calls the targets +- 50 bp (deepflows: --preset wes --targets) and only the targets
            are scored (benchmark --targets, as hap.py -T); wes2 drawn again (other targets and reads)
  tune30, tune20, tune-pcr  calls over the tune regions (chr20:2.0-2.25 Mb, 7.2-7.45 Mb; never trained on):
            30x 2x150, 20x 2x100 with doubled errors, PCR+; made with sim-eval. For choosing between models at
            call level before any evaluation set is looked at

Several deepflows models side by side on the same examples: --model NAME=DIR ... (default: the shipped
wgs-illumina); the preset's shipped model is not chosen for you, so the comparison is explicit:

    python bench/peers.py [--cases na12878,sim-eval,sim-eval2,sim-hard,sim-clean,pcr-plus,wes]
                          [--model v8=resources/models/wgs-illumina-v8 wes=resources/models/wes-illumina]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
from pathlib import Path

from benchlib import (
    DATA,
    OUT,
    ROOT,
    SHIPPED_MODEL,
    binned_copy,
    deepflows,
    deepflows_commands,
    measure,
    model_arg,
    peer_commands,
)

EVAL = ROOT / "results" / "hg002-grch38" / "eval"
MIXED_EVAL = ROOT / "results" / "hg002-grch38-mixed" / "eval"
EVAL_REGIONS = ["chr20:4,900,001-5,200,000", "chr20:8,900,001-9,200,000"]
# Calls over the tune regions (never trained on), for choosing between models before any evaluation set is seen
TUNE_REGIONS = ["chr20:2,000,001-2,250,000", "chr20:7,200,001-7,450,000"]
TUNE_SETS = ("tune30", "tune20", "tune-pcr")


def cases() -> dict[str, dict]:
    table = {
        "na12878": {
            "reads": DATA / "NA12878_S1.chr20.10_10p1mb.bam",
            "ref": DATA / "ucsc.hg19.chr20.unittest.fasta.gz",
            "truth": DATA / "test_nist.b37_chr20_100kbp_at_10mb.vcf.gz",
            "confident": DATA / "test_nist.b37_chr20_100kbp_at_10mb.bed",
            "regions": ["chr20:10,000,001-10,010,000"],
            "published": {"deepvariant (golden)": DATA / "deepvariant_golden/golden.postprocess_single_site_output.vcf"},
            "targets": None,
        },
    }  # fmt: skip
    table["na12878-binned"] = {**table["na12878"], "reads": OUT / "peers" / "na12878-binned.bam", "published": {},
                               "binned_from": table["na12878"]["reads"]}  # fmt: skip
    simulated = [(name, EVAL / folder) for name, folder in (
        ("sim-eval", "standard"), ("sim-eval2", "standard2"), ("sim-hard", "hard"), ("sim-clean", "clean"),
        ("pcr-plus", "pcr-plus"), ("pcr-plus2", "pcr-plus2"), ("wes", "wes"), ("wes2", "wes2"))]  # fmt: skip
    simulated += [(name, MIXED_EVAL / name) for name in ("art", "art-binned", "mason", "mason-binned", "mason2")]
    simulated += [(name, EVAL / name) for name in TUNE_SETS]
    for name, folder in simulated:
        prefix = folder / "reads"
        table[name] = {
            "reads": Path(f"{prefix}.bam"),
            "ref": DATA / "grch38.chr20_and_21_10M.fa.gz",
            "truth": Path(f"{prefix}.truth.vcf.gz"),
            "confident": Path(f"{prefix}.confident.bed"),
            "regions": TUNE_REGIONS if name in TUNE_SETS else EVAL_REGIONS,
            "published": {},
            "targets": folder / "targets.bed" if name.startswith("wes") else None,
        }
    return table




def padded_targets(targets: Path, ref: Path, work: Path) -> Path:
    """The capture targets +- the wes preset's padding, merged (as make-examples --preset wes reads them): where
    every caller looks in an exome."""
    import pysam

    from deepflows.genomics.io.regions import resolve_targets
    from deepflows.genomics.presets import get_preset

    with pysam.FastaFile(str(ref)) as fasta:
        lengths = dict(zip(fasta.references, fasta.lengths))
    out = work / "padded_targets.bed"
    out.write_text("".join(f"{iv.contig}\t{iv.start}\t{iv.end}\n"
                           for iv in resolve_targets(targets, lengths, ref, get_preset("wes").target_padding)))  # fmt: skip
    return out


def callers(case: dict, work: Path, models: dict[str, Path]) -> dict[str, str]:
    """Shell commands, one per caller, each writing `work/<caller>.vcf.gz`."""
    ref, reads = case["ref"], case["reads"]
    regions = [r.replace(",", "") for r in case["regions"]]
    preset = f" --preset wes --targets {case['targets']}" if case["targets"] else ""
    if case["targets"]:
        padded = padded_targets(case["targets"], ref, work)
        bcf_where, fb_where = f"-R {padded}", f"--targets {padded}"
    else:
        bcf_where, fb_where = f"-r {','.join(regions)}", " ".join(f"--region {r}" for r in regions)
    named = {deepflows_caller(name): model for name, model in models.items()}
    return deepflows_commands(reads, ref, regions, work, named, preset) | peer_commands(reads, ref, work, bcf_where,
                                                                                         fb_where)  # fmt: skip


def deepflows_caller(name: str) -> str:
    return "deepflows" if name == "" else f"deepflows-{name}"


def score(case: dict, vcf: Path, out: Path) -> dict:
    """PASS rows of `deepflows benchmark`, by type."""
    regions = [arg for r in case["regions"] for arg in ("--regions", r)]
    targets = ["--targets", str(case["targets"])] if case["targets"] else []
    with open(out.with_suffix(".log"), "w") as log:
        subprocess.run([deepflows(), "benchmark", "--truth", str(case["truth"]), "--confident", str(case["confident"]),
                        "--query", str(vcf), "--ref", str(case["ref"]), *regions, *targets, "--out", str(out)],
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




def run_case(name: str, case: dict, models: dict[str, Path]) -> list[dict]:
    if "binned_from" in case:
        binned_copy(case["binned_from"], case["reads"])
    for key in ("reads", "ref", "truth", "confident", *(["targets"] if case["targets"] else [])):
        if not Path(case[key]).exists():
            raise SystemExit(f"[{name}] {case[key]}: not found" +
                             ("" if name == "na12878" else "; make it with the training_data target (see --help)"))  # fmt: skip
    work = OUT / "peers" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results = []
    for caller, command in callers(case, work, models).items():
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


def errors_table(results: list[dict]) -> str:
    """Errors as DeepVariant's datatype posts count them: FP + FN, SNP and indel apart, beside F1."""
    lines = ["| case | caller | SNP errors (FP + FN) | SNP F1 | INDEL errors (FP + FN) | INDEL F1 |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in results:
        cells = []
        for kind in ("SNP", "INDEL"):
            s = r["scores"].get(kind, {})
            f1 = "n/a" if s.get("F1") is None else f"{s['F1']:.4f}"
            cells += [f"{s.get('FP', 0) + s.get('FN', 0)} ({s.get('FP', '')} + {s.get('FN', '')})", f1]
        lines.append(f"| {r['case']} | {r['caller']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)  # fmt: skip
    parser.add_argument("--cases", default="na12878,sim-eval,sim-eval2,sim-hard,sim-clean")
    parser.add_argument("--json", default=str(OUT / "peers.json"))
    parser.add_argument("--model", nargs="+", type=model_arg, default=[("", SHIPPED_MODEL)], metavar="[NAME=]DIR",
                        help="deepflows model directories, each its own caller deepflows-NAME (default: the shipped "
                             "wgs-illumina, as `deepflows`)")  # fmt: skip
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: not found; the peers table runs on the shared real data")
    table, models = cases(), dict(args.model)
    unknown = [name for name in args.cases.split(",") if name not in table]
    if unknown:
        raise SystemExit(f"--cases: unknown {', '.join(unknown)} (known: {', '.join(table)})")
    results = [row for name in args.cases.split(",") for row in run_case(name, table[name], models)]
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print()
    print(errors_table(results))
    print(f"\n(PASS rows of `deepflows benchmark`; each caller on one CPU; JSON: {args.json})")




if __name__ == "__main__":
    main()
