"""`deepflows nos-search`: one search for update rules (Neural Optimizer Search), resumable from its workdir.

    deepflows nos-search --algorithm controller|random|evolution --seed 0 --rules 1000 --workdir DIR
                         --out history.tsv [--settings config/automl/nos.yaml] [--cache FILE.sqlite]
                         [--executor local|slurm|inline] [--workers 2] [--slurm-queue Q --slurm-account A ...]

Every proposed rule is scored by the child task (deepflows.automl.search.child) unless the cache already holds
its text; --out gets one row per proposed rule (reward, learning rate, whether this search evaluated it, time).
Rerun the same command after a kill to resume; a larger --rules extends a finished search.

`deepflows nos-evaluate --rule TEXT [--settings FILE] [--seed N]`: score one rule and print the result (JSON).
"""

from __future__ import annotations

import logging
from pathlib import Path

from deepflows.arguments import positive_int, seed
from deepflows.errors import UserError

log = logging.getLogger("deepflows.automl")


def add_arguments(p) -> None:
    from deepflows.automl.search.jobs import add_pool_arguments
    from deepflows.automl.search.settings import ALGORITHMS

    p.add_argument("--algorithm", required=True, choices=ALGORITHMS)
    p.add_argument("--seed", type=seed, default=0, help="the search's seed (default 0)")
    p.add_argument("--rules", type=positive_int, required=True, help="how many rules to propose in all")
    p.add_argument("--workdir", required=True, help="the search's state (resumable)")
    p.add_argument("--out", required=True, help="the history table (TSV), written when the budget is spent")
    p.add_argument("--settings", help="search settings YAML (child task, batch, proposers; default: defaults)")
    p.add_argument("--cache", help="the evaluation cache, shared by searches (default: WORKDIR/cache.sqlite)")
    add_pool_arguments(p)


def open_cache(path, workdir, settings):
    from deepflows.automl.search.cache import EvaluationCache
    from deepflows.automl.search.child import fingerprint

    return EvaluationCache(Path(path) if path else Path(workdir) / "cache.sqlite", fingerprint(settings["child"]))


def check_child_data(settings: dict) -> None:
    data = Path(settings["child"]["data"])
    if not data.is_file():
        raise UserError(f"{data}: the child task's MNIST digits (child.data) not found")


def run(args) -> None:
    from deepflows.automl.search.driver import run_search, write_history
    from deepflows.automl.search.jobs import pool_from_args
    from deepflows.automl.search.settings import load_settings
    from deepflows.outputs import check_new_output

    settings = load_settings(args.settings)
    check_child_data(settings)
    out = check_new_output(args.out, suffix=".tsv", kind="a TSV table")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    cache = open_cache(args.cache, args.workdir, settings)
    try:
        with pool_from_args(args) as pool:
            history = run_search(args.workdir, args.algorithm, args.seed, args.rules, settings, pool, cache)
    finally:
        cache.close()
    write_history(history, out)
    best = max(history, key=lambda h: h["reward"])
    log.info("best of %d rules: %.4f %s -> %s", len(history), best["reward"], best["rule"], out)
