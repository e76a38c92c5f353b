"""`deepflows nas-compare`: the controlled comparison of search algorithms on tabular benchmarks: aging and
non-aging evolution, random search, the REINFORCE controller (10 proposals per policy-gradient step) and Large-Scale
Evolution's pairwise loop, the same budget of models each, --runs independent runs per algorithm and dataset on
NAS-Bench-201 (cifar10, cifar100, imagenet = ImageNet16-120) and, as the robustness check on another search
space, on the HPOLib tables (minimising validation MSE) with the same settings.

Tuning first, on NAS-Bench-201 cifar10 only and with run seeds disjoint from the reported runs: aging
evolution's (P, S) (reused by non-aging and pairwise evolution) and the controller's learning rate.

    deepflows nas-compare --out results/automl/nas/comparison [--runs 100] [--budget 300] [--tune-runs 30]
                          [--hpolib-runs 100]

Writes runs.tsv (one run a row: its pick, final seed-mean, regret, best-so-far curve), tuning.md, table.md and
curves.png, and logs the table. The tables have no test split: "final" is the pick's seed-mean validation
score. One process: a run costs milliseconds (the controller's ~0.1 s), so a pool would not pay.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from deepflows.automl.nas import comparison, tabular

log = logging.getLogger("deepflows.automl")

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


def add_arguments(p) -> None:
    from deepflows.arguments import positive_int

    p.add_argument("--out", required=True, help="the comparison's folder")
    p.add_argument("--runs", type=positive_int, default=100,
                   help="reported runs per algorithm and NAS-Bench-201 dataset")
    p.add_argument("--hpolib-runs", type=positive_int, default=100, help="runs per algorithm and HPOLib dataset")
    p.add_argument("--budget", type=positive_int, default=300, help="models evaluated per run")
    p.add_argument("--tune-runs", type=positive_int, default=30, help="runs per tuning setting (cifar10 only)")


def run(args) -> None:
    import pandas as pd

    from deepflows.outputs import check_output_dir, write_text

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check_output_dir(out)
    start = time.perf_counter()
    seeds = range(TUNE_SEED, TUNE_SEED + args.tune_runs)
    chosen, rows = comparison.tune(tabular.load("nasbench201", "cifar10"), seeds, args.budget, GRID, RATES,
                                   comparison.Settings())  # fmt: skip
    log.info("tuned (%.0f s): %s", time.perf_counter() - start, asdict(chosen))
    runs = []
    for bench, n in (("nasbench201", args.runs), ("hpolib", args.hpolib_runs)):
        for dataset in tabular.datasets(bench):
            t0 = time.perf_counter()
            table = tabular.load(bench, dataset)
            runs += comparison.run_rows(comparison.ALGORITHMS, table, range(n), args.budget, chosen)
            log.info("%s %s: %d runs x %d algorithms (%.0f s)", bench, dataset, n, len(comparison.ALGORITHMS),
                     time.perf_counter() - t0)  # fmt: skip
    runs_df = pd.DataFrame(runs)
    text = comparison.table_markdown(runs_df)
    write_text(out / "runs.tsv", runs_df.to_csv(sep="\t", index=False))
    write_text(out / "tuning.md", tuning_markdown(chosen, rows, args.tune_runs, args.budget))
    write_text(out / "table.md", text)
    comparison.plot_curves(runs_df, out / "curves.png")
    log.info("%s\ntotal %.0f s; wrote %s/runs.tsv, tuning.md, table.md, curves.png", text,
             time.perf_counter() - start, out)  # fmt: skip
