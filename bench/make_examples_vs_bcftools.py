#!/usr/bin/env python3
"""deepflows beside `bcftools mpileup | bcftools call` on the same reads, one core each, same run.

Two deepflows rows: make_examples alone, and the whole BAM -> VCF (make-examples, call-variants with the
shipped model or --model, postprocess), each against bcftools' BAM -> VCF.

Cases:
  na12878   the whole real NA12878 BAM (chr20:9,999,912-10,099,996, ~52x, 2x101) from ../shared/data
  sim10mb   GRCh38 chr20:1-10,000,000 simulated at 30x 2x150 with the HG002 truth (made once, cached
            under bench/out/; simulation time is not part of the comparison)

Each command runs pinned to one CPU (taskset) with single-threaded numeric libraries; wall time, CPU
time and peak RSS come from wait4() on the whole process tree. Medians over --repeats runs are
reported as Markdown and JSON, with the ratio deepflows/bcftools.

    python bench/make_examples_vs_bcftools.py [--cases na12878,sim10mb] [--repeats 3] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from benchlib import (
    DATA,
    OUT,
    SHIPPED_MODEL,
    SIM10MB,
    SIM10MB_REF,
    call_and_postprocess,
    deepflows,
    ensure_sim10mb,
    featurizer_flags,
    measure,
)


def cases() -> dict[str, dict]:
    return {
        "na12878": {
            "reads": DATA / "NA12878_S1.chr20.10_10p1mb.bam",
            "ref": DATA / "ucsc.hg19.chr20.unittest.fasta.gz",
            "region": ("chr20", 9_999_912, 10_099_996),
        },
        "sim10mb": {"reads": Path(f"{SIM10MB}.bam"), "ref": SIM10MB_REF, "region": ("chr20", 0, 10_000_000)},
    }


def run_case(name: str, case: dict, repeats: int, model: Path) -> dict:
    if name == "sim10mb":
        ensure_sim10mb()
    elif not case["reads"].exists():
        raise SystemExit(f"{case['reads']}: not found (needs ../shared/data)")
    contig, start, end = case["region"]
    region = f"{contig}:{start + 1}-{end}"
    examples = OUT / f"{name}.examples.zarr"
    ours = (f"rm -rf {examples} && {deepflows()} make-examples --reads {case['reads']} --ref {case['ref']} "
            f"--regions {region} --out {examples}{featurizer_flags(model)}")  # fmt: skip
    probs, vcf = OUT / f"{name}.probs.zarr", OUT / f"{name}.deepflows.vcf.gz"
    call, post = call_and_postprocess([examples], model, probs, case["ref"], vcf)
    whole = f"rm -rf {probs} {vcf} {vcf}.tbi && {ours} && {call} && {post}"
    peer = (f"bcftools mpileup -f {case['ref']} -r {region} -a AD,DP {case['reads']} 2>/dev/null "
            f"| bcftools call -mv -Oz -o {OUT / (name + '.bcftools.vcf.gz')}")  # fmt: skip
    runs = {"deepflows": [], "pipeline": [], "bcftools": []}
    for _ in range(repeats):  # interleaved so machine noise hits all alike
        runs["deepflows"].append(measure(ours))
        runs["pipeline"].append(measure(whole))
        runs["bcftools"].append(measure(peer))
    import zarr

    attrs = zarr.open_group(str(examples), mode="r").attrs
    shutil.rmtree(examples)
    shutil.rmtree(probs)
    med = {tool: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for tool, rs in runs.items()}
    bp = end - start
    return {
        "case": name,
        "region": region,
        "bp": bp,
        "repeats": repeats,
        "candidates": attrs["stats"]["n_candidates"],
        "examples": attrs["n_examples"],
        "median": med,
        "runs": runs,
        "deepflows_bp_per_s": bp / med["deepflows"]["wall_s"],
        "deepflows_candidates_per_s": attrs["stats"]["n_candidates"] / med["deepflows"]["wall_s"],
        "deepflows_examples_per_s": attrs["n_examples"] / med["deepflows"]["wall_s"],
        "bcftools_bp_per_s": bp / med["bcftools"]["wall_s"],
        "ratio_wall": med["deepflows"]["wall_s"] / med["bcftools"]["wall_s"],
        "ratio_cpu": med["deepflows"]["cpu_s"] / med["bcftools"]["cpu_s"],
        "pipeline_ratio_wall": med["pipeline"]["wall_s"] / med["bcftools"]["wall_s"],
        "pipeline_ratio_cpu": med["pipeline"]["cpu_s"] / med["bcftools"]["cpu_s"],
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| case | bp | tool | wall s | CPU s | peak RSS MB | bp/s | candidates/s | examples/s | ratio (wall) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        d, p, b = r["median"]["deepflows"], r["median"]["pipeline"], r["median"]["bcftools"]
        lines.append(f"| {r['case']} | {r['bp']:,} | deepflows make-examples | {d['wall_s']:.1f} | {d['cpu_s']:.1f} | "
                     f"{d['peak_rss_mb']:.0f} | {r['deepflows_bp_per_s']:,.0f} | {r['deepflows_candidates_per_s']:.0f} | "
                     f"{r['deepflows_examples_per_s']:.0f} | {r['ratio_wall']:.2f}x |")  # fmt: skip
        lines.append(f"| {r['case']} | {r['bp']:,} | deepflows BAM -> VCF | {p['wall_s']:.1f} | {p['cpu_s']:.1f} | "
                     f"{p['peak_rss_mb']:.0f} | {r['bp'] / p['wall_s']:,.0f} | | "
                     f"{r['examples'] / p['wall_s']:.0f} | {r['pipeline_ratio_wall']:.2f}x |")  # fmt: skip
        lines.append(f"| {r['case']} | {r['bp']:,} | bcftools mpileup+call | {b['wall_s']:.1f} | {b['cpu_s']:.1f} | "
                     f"{b['peak_rss_mb']:.0f} | {r['bcftools_bp_per_s']:,.0f} | | | 1.00x |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="na12878,sim10mb")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=str(OUT / "make_examples_vs_bcftools.json"))
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL, help="deepflows model directory")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: not found; this benchmark runs on the shared real data")
    table = cases()
    results = [run_case(name, table[name], args.repeats, args.model) for name in args.cases.split(",")]
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"\n(medians of {args.repeats} interleaved runs, one CPU each; JSON: {args.json})")


if __name__ == "__main__":
    main()
