#!/usr/bin/env python3
"""Retraining cells of the architecture search on the full budget, and the search child's throughput.

Retrain (default): each cell (NAS-Bench-201 text; default: the hand-designed ResNet cell, TRIVIAL and two random
cells) trained from scratch with --seeds seeds side by side (one train_many call per cell) for --scale times the
search child's steps, scored on the validation split (the search's reward split, so a searched cell's row is
optimistic). Writes table.tsv and table.md and prints the table.

Throughput (--throughput): seconds per child at the search budget in one worker process with single-threaded XLA,
as the search's local workers run (deepflows.automl.search.jobs): the hand-designed cell, --children random cells,
and the hand-designed cell again; compilation = the first child's seconds minus the same child's the second time.

    python bench/automl_nas_retrain.py [--cell TEXT ...] [--seeds 5] [--scale 4] [--out results/automl/nas/retrain]
    python bench/automl_nas_retrain.py --throughput [--children 6]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT

from deepflows.automl.nas import cells
from deepflows.automl.nas.child import CELL_CHILD_SCHEMA, evaluate_cell, live_params, retrain
from deepflows.errors import UserError

DATA = ROOT.parent / "shared" / "data" / "automl" / "mnist_5k.csv.gz"


def default_cells() -> dict[str, tuple[int, ...]]:
    rng = np.random.default_rng(0)
    named = {"hand-designed (ResNet)": cells.HAND_DESIGNED, "trivial (identity)": cells.TRIVIAL}
    return {**named, **{f"random {i + 1}": tuple(cells.sample(rng)) for i in range(2)}}


def child_settings(data: str) -> dict:
    return {**{k: v["default"] for k, v in CELL_CHILD_SCHEMA["properties"].items()}, "data": data}


def write_table(rows: list[dict], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0])
    (out / "table.tsv").write_text("\n".join("\t".join(str(r[f]) for f in fields) for r in [dict(zip(fields, fields)),
                                                                                              *rows]) + "\n")
    lines = ["| cell | name | live params | steps | validation accuracy mean +- sd | n ok | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        value = f"{r['mean']:.4f} +- {r['sd']:.4f}" if r["n_ok"] else "all failed"
        cell = r["cell"].replace("|", "\\|")  # a cell's text is full of the table's separator
        lines.append(f"| `{cell}` | {r['name']} | {r['params']} | {r['steps']} | {value} | {r['n_ok']} "
                     f"| {r['seconds']} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    return text


def run_retrain(named: dict, child: dict, seeds: int, steps: int, out: Path) -> None:
    rows = []
    for name, cell in named.items():
        start = time.perf_counter()
        accuracies = retrain(cell, child, list(range(seeds)), steps)
        ok = np.array([a for a in accuracies if a is not None])
        rows.append({"cell": cells.to_text(cell), "name": name,
                     "params": live_params(cell, child), "steps": steps,
                     "mean": round(float(ok.mean()), 4) if len(ok) else float("nan"),
                     "sd": round(float(ok.std(ddof=1)), 4) if len(ok) > 1 else 0.0, "n_ok": len(ok),
                     "accuracies": accuracies, "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
        print(rows[-1], flush=True)
    print(write_table(rows, out))
    print(f"wrote {out}/table.tsv, table.md (seconds: the seeds side by side, compilation included)")


def run_throughput(child: dict, children: int) -> None:
    from deepflows.automl.search.jobs import Pool

    rng = np.random.default_rng(1)
    jobs = [(list(cells.HAND_DESIGNED), child)] + [(cells.sample(rng), child) for _ in range(children)]
    jobs.append((list(cells.HAND_DESIGNED), child))
    seconds = [0.0] * len(jobs)
    with Pool("local", workers=1) as pool:
        for i, result in pool.run(evaluate_cell, jobs):
            seconds[i] = result["seconds"]
            print(i, result, flush=True)
    warm = seconds[1:]
    print(f"{child['steps']} steps per child, 1 worker, single-threaded XLA: compilation "
          f"~{seconds[0] - seconds[-1]:.1f} s (first child {seconds[0]:.1f} s, same child again {seconds[-1]:.1f} s);"
          f" compiled children: mean {np.mean(warm):.1f} s, min {min(warm):.1f} s, max {max(warm):.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", action="append", default=[], help="a cell's NAS-Bench-201 text (repeatable)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=4.0, help="retrain steps: this times the search child's")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--out", default=str(ROOT / "results" / "automl" / "nas" / "retrain"))
    parser.add_argument("--throughput", action="store_true", help="measure seconds per search child instead")
    parser.add_argument("--children", type=int, default=6, help="--throughput: random cells after the first")
    args = parser.parse_args(argv)
    child = child_settings(args.data)
    if args.throughput:
        run_throughput(child, args.children)
        return 0
    try:
        named = {text: cells.parse(text) for text in args.cell} or default_cells()
    except UserError as error:
        parser.error(str(error))
    steps = max(1, round(child["steps"] * args.scale / child["check_every"])) * child["check_every"]
    run_retrain(named, child, args.seeds, steps, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
