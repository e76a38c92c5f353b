#!/usr/bin/env python3
"""Throughput of the live architecture search: the same aging-evolution search (config/automl/nas.yaml's child)
run with 1 worker and with 2 (local processes, single-threaded XLA each), side by side, and a projection for a
cluster from the measured cost of one child.

Per run: wall time, models per hour, each worker's first child (it compiles the child program once) and the
median of the others, and the controller's own share (wall time not covered by workers' training). The
projection: W workers finish W x 3600 / (median child seconds + controller seconds per child) models per hour,
as long as the controller keeps up (it spends milliseconds per child here) and each worker compiles once.

    python bench/automl_nas_throughput.py [--models 16] [--workers 1 2] [--settings config/automl/nas.yaml]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT

from deepflows.automl.nas.child import fingerprint
from deepflows.automl.nas.live import run_live_search
from deepflows.automl.nas.settings import load_settings
from deepflows.automl.search.jobs import Pool


def measure(settings: dict, workers: int, models: int) -> dict:
    with tempfile.TemporaryDirectory() as work, Pool("local", workers) as pool:
        start = time.perf_counter()
        done = run_live_search(work, "aging", 0, models, settings, pool, fingerprint=fingerprint(settings["child"]))
        wall = time.perf_counter() - start
    seconds = np.array([m["seconds"] for m in sorted(done, key=lambda m: m["id"])])
    first, rest = seconds[:workers], seconds[workers:]  # each worker's first child compiled the program
    return {"workers": workers, "models": len(done), "wall": wall, "per_hour": len(done) * 3600 / wall,
            "first": float(np.median(first)), "child": float(np.median(rest)),
            "controller": max(0.0, wall - seconds.sum() / workers) / len(done)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=16, help="children per run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--settings", default=str(ROOT / "config" / "automl" / "nas.yaml"))
    parser.add_argument("--cluster", type=int, nargs="+", default=[16, 64, 256], help="workers to project for")
    args = parser.parse_args(argv)
    settings = load_settings(args.settings)
    rows = [measure(settings, w, args.models) for w in args.workers]
    print("| workers | models | wall s | models/hour | first child s (compiles) | median child s | controller s/child |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['models']} | {r['wall']:.0f} | {r['per_hour']:.0f} | {r['first']:.1f} | "
              f"{r['child']:.1f} | {r['controller']:.2f} |")  # fmt: skip
    base = rows[0]
    for r in rows[1:]:
        print(f"{r['workers']} workers vs {base['workers']}: {r['per_hour'] / base['per_hour']:.2f}x models/hour")
    cost = base["child"] + base["controller"]
    print(f"projection from one worker's median child ({base['child']:.1f} s) + controller "
          f"({base['controller']:.2f} s/child): " + ", ".join(f"{w} workers ~{w * 3600 / cost:,.0f} models/hour"
                                                             for w in args.cluster))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
