#!/usr/bin/env python3
"""Real HG002 Illumina reads (no truth on b37 here): how model versions and peers agree, and whether binned
base qualities move the calls.

The real HG002 30x BAM of ../shared/data (b37, 20:10,000,001-10,100,000, 148 bp) is called by each deepflows
model (--model NAME=DIR ...), by bcftools (`mpileup -a AD,DP | call -mv`) and freebayes; then again by each
model on the same reads with their qualities binned as a NovaSeq writes them (2/12/23/37). Reported: PASS
calls per caller, SNP and indel apart, and for each caller how many of its calls the first model (the
reference column) makes too, with the same alleles and with the same genotype (every VCF normalised by
`bcftools norm -a -m -any` first: left-aligned, one ALT per record, complex alleles atomized).

    python bench/real_concordance.py [--model v8=resources/models/wgs-illumina-v8 v9=resources/models/wgs-illumina]
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
    binned_copy,
    deepflows_commands,
    kind,
    measure,
    model_arg,
    pass_calls,
    peer_commands,
)

SHIPPED = Path(__file__).resolve().parents[1] / "resources" / "models" / "wgs-illumina"


def commands(reads: Path, work: Path, models: dict[str, Path], peers: bool) -> dict[str, str]:
    ref, region = HG002_B37["ref"], HG002_B37["region"].replace(",", "")
    out = deepflows_commands(reads, ref, [region], work, models)
    return out | peer_commands(reads, ref, work, f"-r {region}", f"--region {region}") if peers else out


def normalized(vcf: Path) -> Path:
    """The calls left-aligned, split into one ALT per record and atomized (bcftools norm -a -m -any), so that
    callers that write an indel or a complex allele differently are compared allele by allele."""
    out = vcf.with_name(vcf.name.replace(".vcf.gz", ".norm.vcf.gz"))
    subprocess.run(["bcftools", "norm", "-f", str(HG002_B37["ref"]), "-a", "-m", "-any", "-Oz", "-o", str(out),
                    str(vcf)], check=True, capture_output=True)  # fmt: skip
    return out


def agreement(reference: dict, calls: dict, variant_kind: str) -> dict:
    a = {k: v for k, v in reference.items() if kind(k) == variant_kind}
    b = {k: v for k, v in calls.items() if kind(k) == variant_kind}
    both = [k for k in b if k in a]
    return {"calls": len(b), "same_alleles": len(both), "same_genotype": sum(a[k] == b[k] for k in both)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)  # fmt: skip
    parser.add_argument("--model", nargs="+", type=model_arg, default=[("shipped", SHIPPED)], metavar="NAME=DIR",
                        help="deepflows models; the first is the reference column (default: the shipped model)")
    parser.add_argument("--json", type=Path, default=OUT / "real_concordance.json")
    args = parser.parse_args()
    models = {name or Path(directory).name: Path(directory) for name, directory in args.model}
    for path in (HG002_B37["reads"], HG002_B37["ref"], *models.values()):
        if not Path(path).exists():
            raise SystemExit(f"{path}: not found")
    work = OUT / "real_concordance"
    shutil.rmtree(work, ignore_errors=True)
    (work / "binned").mkdir(parents=True)
    binned = work / "binned" / "reads.bam"
    binned_copy(HG002_B37["reads"], binned)
    runs = {}
    for label, reads, folder, peers in (("", HG002_B37["reads"], work, True), ("binned ", binned, work / "binned",
                                                                               False)):  # fmt: skip
        for name, command in commands(reads, folder, models, peers).items():
            timing = measure(command)
            runs[label + name] = {**timing, "calls": pass_calls(normalized(folder / f"{name}.vcf.gz"))}
    reference_name = next(iter(models))
    reference = runs[reference_name]["calls"]
    rows = [{"caller": name, "type": t, **agreement(reference, run["calls"], t)} for name, run in runs.items()
            for t in ("SNP", "INDEL")]  # fmt: skip
    print(f"real HG002 30x, b37 {HG002_B37['region']}: PASS calls, and how many {reference_name} makes too")
    print(f"| caller | type | calls | same alleles as {reference_name} | same genotype |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['caller']} | {row['type']} | {row['calls']} | {row['same_alleles']} | {row['same_genotype']} |")
    args.json.write_text(json.dumps({"region": HG002_B37["region"], "reference": reference_name, "rows": rows,
                                     "runs": {n: {k: v for k, v in r.items() if k != "calls"}
                                              for n, r in runs.items()}}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
