#!/usr/bin/env python3
"""Real HG002 Illumina reads through both datatype presets: call counts and concordance (no truth here).

The real HG002 30x BAM of ../shared/data (b37, 20:10,000,001-10,100,000, 148 bp, duplicates already marked by
bamsormadup) is called twice: `--preset wgs` over the whole window with the WGS model, and `--preset wes` over
exome-like capture targets drawn on the window (`deepflows capture-targets`, 30% of it, so that enough variants
fall in them; real exome targets are not available offline) with the WES model. Reported: PASS calls per
preset (SNP / indel, inside the targets for both), and how many of them agree (same alleles and genotype).

    python bench/presets_real.py [--wgs-model DIR] [--wes-model DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

from benchlib import (
    HG002_B37,
    OUT,
    ROOT,
    call_and_postprocess,
    deepflows,
    featurizer_flags,
    kind,
    measure,
    pass_calls,
)

from deepflows.genomics.io.regions import read_bed

BAM, REF, REGION = HG002_B37["reads"], HG002_B37["ref"], HG002_B37["region"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)  # fmt: skip
    parser.add_argument("--wgs-model", type=Path, default=ROOT / "resources/models/wgs-illumina")
    parser.add_argument("--wes-model", type=Path, default=ROOT / "resources/models/wes-illumina")
    parser.add_argument("--json", type=Path, default=OUT / "presets_real.json")
    args = parser.parse_args()
    for path in (BAM, REF, args.wgs_model, args.wes_model):
        if not path.exists():
            raise SystemExit(f"{path}: not found")
    work = OUT / "presets_real"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    targets_bed = work / "targets.bed"
    subprocess.run([deepflows(), "capture-targets", "--ref", str(REF), "--region", REGION.replace(",", ""),
                    "--fraction", "0.3", "--seed", "1", "--out", str(targets_bed)], check=True,
                   stderr=subprocess.DEVNULL)  # fmt: skip
    targets = [(iv.start, iv.end) for iv in read_bed(targets_bed)]
    runs = {}
    for preset, model, extra in (("wgs", args.wgs_model, ""), ("wes", args.wes_model, f" --targets {targets_bed}")):
        folder = work / preset
        folder.mkdir()
        call, post = call_and_postprocess([folder / "examples.zarr"], model, folder / "probs.zarr", REF,
                                          folder / "calls.vcf.gz", logs=folder)  # fmt: skip
        timing = measure(f"{deepflows()} make-examples --reads {BAM} --ref {REF} --regions {REGION} --preset {preset}"
                         f"{extra} --out {folder}/examples.zarr{featurizer_flags(model)} 2> {folder}/make_examples.log"
                         f" && {call} && {post}")  # fmt: skip
        runs[preset] = {"model": str(model), **timing, "calls": pass_calls(folder / "calls.vcf.gz", targets)}
    wgs, wes = runs["wgs"]["calls"], runs["wes"]["calls"]
    rows = []
    for variant_kind in ("SNP", "INDEL"):
        a = {k: v for k, v in wgs.items() if kind(k) == variant_kind}
        b = {k: v for k, v in wes.items() if kind(k) == variant_kind}
        both = [k for k in a if k in b]
        rows.append({"type": variant_kind, "wgs": len(a), "wes": len(b), "same_alleles": len(both),
                     "same_genotype": sum(a[k] == b[k] for k in both), "wgs_only": len(a) - len(both),
                     "wes_only": len(b) - len(both)})  # fmt: skip
    covered = sum(b - a for a, b in targets)
    print(f"real HG002 30x, b37 {REGION}: {len(targets)} targets, {covered:,} bp; PASS calls inside the targets")
    print("| type | wgs preset | wes preset | same alleles | same genotype | wgs only | wes only |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['type']} | {row['wgs']} | {row['wes']} | {row['same_alleles']} | {row['same_genotype']} | "
              f"{row['wgs_only']} | {row['wes_only']} |")
    for preset, run in runs.items():
        print(f"{preset}: {run['model']}, {run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} s CPU")
    summary = {"region": REGION, "targets": len(targets), "target_bp": covered, "rows": rows,
               "runs": {p: {k: v for k, v in r.items() if k != "calls"} for p, r in runs.items()}}  # fmt: skip
    args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
