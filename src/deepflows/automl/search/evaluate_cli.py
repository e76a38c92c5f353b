"""`deepflows nos-evaluate --rule TEXT`: train the child task with one update rule and print its result."""

from __future__ import annotations

import json


def add_arguments(p) -> None:
    from deepflows.arguments import seed

    p.add_argument("--rule", required=True, help="an update rule, e.g. 'exp(sign(g)*sign(m))*g'")
    p.add_argument("--settings", help="search settings YAML (its child section; default: defaults)")
    p.add_argument("--seed", type=seed, help="the child's seed (default: the settings')")


def run(args) -> None:
    from deepflows.automl.grammar import parse
    from deepflows.automl.search.child import evaluate_rule
    from deepflows.automl.search.cli import check_child_data
    from deepflows.automl.search.settings import load_settings

    settings = load_settings(args.settings)
    child = {**settings["child"], **({} if args.seed is None else {"seed": args.seed})}
    check_child_data(settings)
    print(json.dumps(evaluate_rule(str(parse(args.rule, child["units"])), child), indent=2))
