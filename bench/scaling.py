#!/usr/bin/env python3
"""Scaling of the calling pipeline on a simulated 10 Mb at 30x: make_examples in 1, 2 and 4 shards on the
CPUs given (default 2), then call_variants and postprocess on one core; and the projected cost of a 30x
human genome beside DeepVariant's published whole-genome run.

Input: bench/out/sim10mb.bam (GRCh38 chr20:1-10,000,000, HG002 truth, 30x 2x150; made once, shared with
make_examples_vs_bcftools.py). Shard jobs run as a pool of one process per CPU, each pinned (taskset) with
single-threaded libraries; every job's wall s, CPU s and peak RSS come from wait4(). A stage's wall time is
from its first job's start to its last job's end.

Projection: CPU seconds per stage scaled from 10 Mb to 3.1 Gb (linear in bases and candidates), in core-hours,
beside DeepVariant 1.x's published HG003 30x WGS on 96 vCPUs (make_examples 47 min, call_variants 16 min,
postprocess 7 min of wall time, i.e. at most 75.2, 25.6 and 11.2 vCPU-hours).

    python bench/scaling.py [--shards 1,2,4] [--cpus 0,1] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchlib import (
    OUT,
    SHIPPED_MODEL,
    SIM10MB_REF,
    call_and_postprocess,
    deepflows,
    ensure_sim10mb,
    featurizer_flags,
    measure,
)

REGION = "chr20:1-10000000"
BASES, GENOME = 10_000_000, 3_100_000_000
DEEPVARIANT_WGS = {"make_examples": 47, "call_variants": 16, "postprocess": 7}  # minutes on 96 vCPUs
DEEPVARIANT_VCPUS = 96


def run_jobs(commands: list[str], cpus: list[int]) -> dict:
    """Every command once, at most one per CPU at a time; the stage's wall time and each job's figures."""
    free = list(cpus)

    def one(command: str) -> dict:
        cpu = free.pop()
        try:
            return measure(command, cpu)
        finally:
            free.append(cpu)

    start = time.perf_counter()
    with ThreadPoolExecutor(len(cpus)) as pool:
        jobs = list(pool.map(one, commands))
    return {"wall_s": time.perf_counter() - start, "cpu_s": sum(j["cpu_s"] for j in jobs),
            "peak_rss_mb": max(j["peak_rss_mb"] for j in jobs), "jobs": jobs}  # fmt: skip


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_shards(n: int, cpus: list[int], model: Path, bam: Path) -> dict:
    import zarr

    work = OUT / "scaling" / f"shards-{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shards = [work / f"examples-{i:05d}-of-{n:05d}.zarr" for i in range(n)]
    make = [f"{deepflows()} make-examples --reads {bam} --ref {SIM10MB_REF} --regions {REGION} --shard {i}/{n}"
            f" --sample HG002-sim --out {shard}{featurizer_flags(model)} 2> {shard}.log"
            for i, shard in enumerate(shards)]  # fmt: skip
    stages = {"make_examples": run_jobs(make, cpus)}
    examples = sum(zarr.open_group(str(s), mode="r").attrs["n_examples"] for s in shards)
    call, post = call_and_postprocess(shards, model, work / "probs.zarr", SIM10MB_REF, work / "calls.vcf.gz", logs=work)
    stages["call_variants"] = run_jobs([call], cpus[:1])
    stages["postprocess"] = run_jobs([post], cpus[:1])
    zarr_bytes = sum(directory_bytes(s) for s in shards)
    return {"shards": n, "cpus": len(cpus), "examples": examples, "zarr_bytes_per_example": zarr_bytes / examples,
            "stages": stages, "vcf_sha256": _sha256(work / "calls.vcf.gz", skip_header=True)}  # fmt: skip


def _sha256(path: Path, skip_header: bool) -> str:
    import gzip
    import hashlib

    digest = hashlib.sha256()
    with gzip.open(path, "rb") as handle:
        for line in handle:
            if not (skip_header and line.startswith(b"#")):
                digest.update(line)
    return digest.hexdigest()


def projection(result: dict) -> dict:
    """Core-hours for a 30x human genome per stage, from this run's CPU seconds."""
    scale = GENOME / BASES
    ours = {stage: s["cpu_s"] * scale / 3600 for stage, s in result["stages"].items()}
    theirs = {stage: minutes / 60 * DEEPVARIANT_VCPUS for stage, minutes in DEEPVARIANT_WGS.items()}
    return {"deepflows_core_hours": ours, "deepvariant_vcpu_hours": theirs}


def markdown(results: list[dict], proj: dict) -> str:
    lines = ["| shards | CPUs | stage | jobs | wall s | CPU s | examples/s (wall) | peak RSS MB (largest job) |",
             "|---:|---:|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in results:
        for stage, s in r["stages"].items():
            lines.append(f"| {r['shards']} | {r['cpus']} | {stage} | {len(s['jobs'])} | {s['wall_s']:.1f} | "
                         f"{s['cpu_s']:.1f} | {r['examples'] / s['wall_s']:.0f} | {s['peak_rss_mb']:.0f} |")  # fmt: skip
    lines += ["", "| shards | examples | Zarr bytes/example | VCF body sha256 (first 16) |", "|---:|---:|---:|---|"]
    lines += [f"| {r['shards']} | {r['examples']:,} | {r['zarr_bytes_per_example']:,.0f} | {r['vcf_sha256'][:16]} |"
              for r in results]  # fmt: skip
    lines += ["", "| stage | deepflows core-hours, 30x genome (projected) | DeepVariant vCPU-hours (published, HG003 WGS) |",
              "|---|---:|---:|"]  # fmt: skip
    for stage in DEEPVARIANT_WGS:
        lines.append(f"| {stage} | {proj['deepflows_core_hours'][stage]:.1f} | {proj['deepvariant_vcpu_hours'][stage]:.1f} |")
    total = sum(proj["deepflows_core_hours"].values()), sum(proj["deepvariant_vcpu_hours"].values())
    lines.append(f"| total | {total[0]:.1f} | {total[1]:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)  # fmt: skip
    parser.add_argument("--shards", default="1,2,4")
    parser.add_argument("--cpus", default="0,1", help="CPUs the shard jobs are pinned to, one job per CPU")
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--json", default=str(OUT / "scaling.json"))
    args = parser.parse_args()
    bam = ensure_sim10mb()
    cpus = [int(c) for c in args.cpus.split(",")]
    results = [run_shards(int(n), cpus, args.model, bam) for n in args.shards.split(",")]
    proj = projection(results[0])
    Path(args.json).write_text(json.dumps({"results": results, "projection": proj}, indent=2) + "\n")
    print(markdown(results, proj))
    print(f"\n(one process per CPU, pinned; projection from the {results[0]['shards']}-shard run's CPU seconds; "
          f"JSON: {args.json})")  # fmt: skip


if __name__ == "__main__":
    main()
