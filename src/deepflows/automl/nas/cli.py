"""`deepflows nas-search`: one live architecture search over NAS-Bench-201-like cells, resumable from its workdir.

    deepflows nas-search --algorithm aging|non-aging|random|reinforce|pairwise --models 200 --workdir DIR
                         --out models.tsv [--init random|hand] [--seed 0] [--settings config/automl/nas.yaml]
                         [--executor local|slurm|inline] [--workers 2] [--slurm-queue Q --slurm-account A ...]

Workers train children on the MNIST digits (deepflows.automl.nas.child) while the controller keeps them busy
(deepflows.automl.nas.live); the population and every model live in WORKDIR/population.sqlite. Rerun the same
command after a kill: the children that were in flight are lost, the rest goes on. A larger --models extends a
finished search. --out gets one row per model started (cell, parent, status, reward, seed, times).
"""

from __future__ import annotations

import logging
from pathlib import Path

from deepflows.arguments import positive_int, seed
from deepflows.errors import UserError

log = logging.getLogger("deepflows.automl")
COLUMNS = ("id", "cell", "parent", "status", "outcome", "reward", "params", "seed", "seconds", "incarnation",
           "started", "finished", "finish_order", "error")  # fmt: skip


def add_arguments(p) -> None:
    from deepflows.automl.nas.algorithms import ALGORITHMS
    from deepflows.automl.nas.live import INITS
    from deepflows.automl.search.jobs import add_pool_arguments

    p.add_argument("--algorithm", required=True, choices=ALGORITHMS)
    p.add_argument("--init", choices=INITS, default="random",
                   help="the first population: random cells, or the hand-designed cell and its mutants (evolution)")
    p.add_argument("--seed", type=seed, default=0, help="the search's seed (default 0)")
    p.add_argument("--models", type=positive_int, required=True, help="how many children to train in all")
    p.add_argument("--workdir", required=True, help="the search's store and weights (resumable)")
    p.add_argument("--out", required=True, help="the models table (TSV), written when the budget is spent")
    p.add_argument("--settings", help="search settings YAML (child task, population; default: defaults)")
    add_pool_arguments(p)


def run(args) -> None:
    from deepflows.automl.nas.cells import to_text
    from deepflows.automl.nas.child import fingerprint
    from deepflows.automl.nas.algorithms import SEEDED
    from deepflows.automl.nas.live import run_live_search
    from deepflows.automl.nas.settings import load_settings
    from deepflows.automl.search.jobs import pool_from_args
    from deepflows.outputs import check_new_output

    if args.init == "hand" and args.algorithm not in SEEDED:
        raise UserError(f"--init hand seeds a population: use it with {', '.join(SEEDED)}, not {args.algorithm}")
    settings = load_settings(args.settings)
    data = Path(settings["child"]["data"])
    if not data.is_file():
        raise UserError(f"{data}: the child task's MNIST digits (child.data) not found")
    out = check_new_output(args.out, suffix=".tsv", kind="a TSV table")
    with pool_from_args(args) as pool:
        models = run_live_search(args.workdir, args.algorithm, args.seed, args.models, settings, pool,
                                 init=args.init, fingerprint=fingerprint(settings["child"]))  # fmt: skip
    write_models(models, out)
    done = [m for m in models if m["status"] == "done"]
    best = max(done, key=lambda m: m["reward"])
    log.info("best of %d models: %.4f %s -> %s", len(done), best["reward"], to_text(best["cell"]), out)


def write_models(models: list[dict], out: str | Path) -> None:
    import pandas as pd

    from deepflows.automl.nas.cells import to_text
    from deepflows.outputs import write_text

    table = pd.DataFrame([{**m, "cell": to_text(m["cell"])} for m in models], columns=list(COLUMNS))
    write_text(out, table.to_csv(sep="\t", index=False))
