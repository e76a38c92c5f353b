#!/usr/bin/env python3
"""call_variants throughput on one CPU core: the shipped model (or --model) over real pileup examples of a
simulated sample.

Input (made once, cached under bench/out/call_variants_speed/): a 5 Mb synthetic reference
(`deepflows make-reference`), 30x simulated reads with random variants (`deepflows simulate`) and their
calling examples (`deepflows make-examples`, ~5,000 examples).

Each configuration runs `deepflows call-variants` pinned to one CPU (taskset; $BENCH_CPU, default 0) with
XLA's CPU backend held to one thread (XLA_FLAGS) and single-threaded numeric libraries. Reported: examples/s over the inference
loop (reading, decoding, the model, writing; compilation included) as the stage logs it, and wall s,
CPU s and peak RSS of the whole command (JAX start-up and model loading included).

    python bench/call_variants_speed.py [--model DIR] [--batch-size 256] [--length 5000000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import zarr
from benchlib import (
    ONE_CORE_XLA,
    OUT,
    SHIPPED_MODEL,
    deepflows,
    featurizer_flags,
    measure,
)

WORK = OUT / "call_variants_speed"


def prepare(length: int, model: Path, channels: list[str]) -> Path:
    """The examples shard, featurized as `model` expects (flags and `channels`), made once."""
    WORK.mkdir(parents=True, exist_ok=True)
    flags = featurizer_flags(model).split()
    ref, prefix, examples = WORK / "ref.fa", WORK / "sim", WORK / f"examples{'-realigned' * ('--realign' in flags)}.zarr"
    steps = [
        (ref, [deepflows(), "make-reference", "--out", str(ref), "--length", str(length), "--seed", "1"]),
        (Path(f"{prefix}.bam"), [deepflows(), "simulate", "--ref", str(ref), "--random-variants", "--depth", "30",
                                 "--seed", "1", "--out-prefix", str(prefix)]),
        (examples, [deepflows(), "make-examples", "--reads", f"{prefix}.bam", "--ref", str(ref),
                    "--out", str(examples), *flags]),
    ]  # fmt: skip
    if examples.exists() and list(zarr.open_group(str(examples), mode="r").attrs["channels"]) != channels:
        shutil.rmtree(examples)  # made by an older featurizer
    for output, command in steps:
        if not output.exists():
            print(f"making input once: {' '.join(command)}", file=sys.stderr)
            subprocess.run(command, check=True)
    return examples


def run_config(examples: Path, model: Path, batch: int, micro: int | None, repeats: int) -> dict:
    out = WORK / "probs.zarr"
    extra = "" if micro is None else f" --micro-batch {micro}"
    command = (f"rm -rf {out} && {deepflows()} call-variants --examples {examples} "
               f"--model {model} --out {out} --batch-size {batch}{extra}")  # fmt: skip
    runs = []
    for _ in range(repeats):
        measured = measure(command)
        stats = dict(zarr.open_group(str(out), mode="r").attrs["stats"])
        runs.append({**measured, **stats})
    shutil.rmtree(out, ignore_errors=True)
    keys = ("wall_s", "cpu_s", "peak_rss_mb", "examples_per_second", "inference_seconds")
    median = {k: statistics.median(r[k] for r in runs) for k in keys}
    return {"batch_size": runs[0]["batch_size"], "micro_batch": runs[0]["micro_batch"],
            "n_examples": runs[0]["n_examples"], "median": median, "runs": runs}  # fmt: skip


def markdown(results: list[dict]) -> str:
    lines = ["| batch | micro-batch | examples | examples/s (inference) | wall s (command) | CPU s | peak RSS MB |",
             "|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in results:
        m = r["median"]
        cells = [r["batch_size"], r["micro_batch"], f"{r['n_examples']:,}", f"{m['examples_per_second']:.1f}",
                 f"{m['wall_s']:.1f}", f"{m['cpu_s']:.1f}", f"{m['peak_rss_mb']:.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL, help="model directory (default: shipped)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--length", type=int, default=5_000_000, help="reference length (examples scale with it)")
    parser.add_argument("--micro-batches", default="default,0",
                        help="--micro-batch values to compare, comma-separated ('default': the stage's)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", default=str(OUT / "call_variants_speed.json"))
    args = parser.parse_args()
    meta = json.loads((args.model / "model.json").read_text())
    examples = prepare(args.length, args.model, meta["channels"])
    results = []
    for value in args.micro_batches.split(","):
        micro = None if value == "default" else int(value)
        results.append(run_config(examples, args.model, args.batch_size, micro, args.repeats))
        print(markdown(results[-1:]).splitlines()[-1], file=sys.stderr)
    report = {"model": f"{args.model} ({meta['architecture']} {meta.get('options', {})})", "cpu": _cpu_name(),
              "pinning": f"taskset -c {os.environ.get('BENCH_CPU', '0')}, XLA_FLAGS={ONE_CORE_XLA}", "results": results}  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(results))
    print(f"\n(one core of {report['cpu']}; medians of {args.repeats} run(s); JSON: {args.json})")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
