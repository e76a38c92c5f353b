#!/usr/bin/env python3
"""The controlled comparison of regularized evolution (Real et al. 2019) on tabular benchmarks: aging and non-aging
evolution, random search, the REINFORCE controller (10 proposals per policy-gradient step) and Large-Scale
Evolution's pairwise loop, the same budget of models each, --runs independent runs per algorithm and dataset on
NAS-Bench-201 (cifar10, cifar100, imagenet = ImageNet16-120) and, as the robustness check on another search
space, on the HPOLib tables (minimising validation MSE) with the same settings.

Tuning first, on NAS-Bench-201 cifar10 only and with run seeds disjoint from the reported runs: aging
evolution's (P, S) (reused by non-aging and pairwise evolution) and the controller's learning rate.

    python bench/automl_nas_comparison.py [--runs 100] [--budget 300] [--tune-runs 30] [--hpolib-runs 100]
                                          [--out results/automl/nas/comparison]

Writes runs.tsv (one run a row: its pick, final seed-mean, regret, best-so-far curve), tuning.md, table.md and
curves.png, and prints the table. The tables have no test split: "final" is the pick's seed-mean validation
score. Single process: a run costs milliseconds (the controller's ~0.1 s), so a pool would not pay.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT

from deepflows.automl.nas import comparison, tabular

GRID = [(p, s) for p in (10, 20, 50, 100) for s in (2, 5, 10, 25) if s <= p]
RATES = (0.001, 0.003, 0.01, 0.03, 0.1)
TUNE_SEED = 1_000_000  # tuning runs use seeds from here; reported runs use 0..runs-1


def tuning_markdown(chosen, rows, tune_runs: int, budget: int) -> str:
    lines = [f"Tuned on nasbench201 cifar10, {tune_runs} runs per setting (seeds from {TUNE_SEED}, disjoint from the "
             f"reported runs), budget {budget}; criterion: mean seed-mean validation accuracy of the final pick.", "",
             f"Chosen: {asdict(chosen)}", "", "| algorithm | P | S | learning rate | runs | final (mean ± 95% CI) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['algorithm']} | {r['population'] or ''} | {r['sample'] or ''} | "
                     f"{r['learning_rate'] or ''} | {r['runs']} | {r['mean']:.3f} ± {r['ci95']:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="reported runs per algorithm and NAS-Bench-201 dataset")
    parser.add_argument("--hpolib-runs", type=int, default=100, help="runs per algorithm and HPOLib dataset")
    parser.add_argument("--budget", type=int, default=300, help="models evaluated per run")
    parser.add_argument("--tune-runs", type=int, default=30)
    parser.add_argument("--out", default=str(ROOT / "results" / "automl" / "nas" / "comparison"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    seeds = range(TUNE_SEED, TUNE_SEED + args.tune_runs)
    chosen, rows = comparison.tune(tabular.load("nasbench201", "cifar10"), seeds, args.budget, GRID, RATES,
                                   comparison.Settings())  # fmt: skip
    (out / "tuning.md").write_text(tuning_markdown(chosen, rows, args.tune_runs, args.budget))
    print(f"tuned ({time.perf_counter() - start:.0f} s): {asdict(chosen)}", flush=True)

    runs = []
    for bench, n in (("nasbench201", args.runs), ("hpolib", args.hpolib_runs)):
        for dataset in tabular.datasets(bench):
            t0 = time.perf_counter()
            table = tabular.load(bench, dataset)
            runs += comparison.run_rows(comparison.ALGORITHMS, table, range(n), args.budget, chosen)
            print(f"{bench} {dataset}: {n} runs x {len(comparison.ALGORITHMS)} algorithms "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    runs_df = pd.DataFrame(runs)
    runs_df.to_csv(out / "runs.tsv", sep="\t", index=False)
    text = comparison.table_markdown(runs_df)
    (out / "table.md").write_text(text)
    comparison.plot_curves(runs_df, out / "curves.png")
    print(text)
    print(f"total {time.perf_counter() - start:.0f} s; wrote {out}/runs.tsv, tuning.md, table.md, curves.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
