"""`deepflows nos-report`: searches' histories -> the comparison of proposers and the best rules found.

    deepflows nos-report --histories results/automl/nos/history/*.tsv --out results/automl/nos/report
                         [--settings config/automl/nos.yaml] [--reevaluate-seeds 1 2 3] [--top 10] [--cache FILE]

Writes curves.png (best-so-far reward vs rules proposed, one colour per proposer: each seed thin, the mean
thick; hand-written reference rules dashed), searches.md (per search: rules, rules evaluated, time, best rule),
references.md (the reference rules' rewards, re-measured likewise), families.md (every distinct rule scored,
by family: PowerSign-like, AddSign-like, other), top_rules.md and .tsv (the best
distinct rules of all searches, with the family they belong to (deepflows.automl.search.families) and their
reward re-measured with other child seeds: the search's reward is the maximum over thousands of rules of a
one-seed measurement, so it flatters the winners; the re-measurement does not).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from deepflows.errors import UserError

log = logging.getLogger("deepflows.automl")
REFERENCES = ("g", "adam", "exp(sign(g)*sign(m))*g", "(1+sign(g)*sign(m))*g")
COLOURS = {"controller": "tab:blue", "evolution": "tab:green", "random": "tab:grey"}


def add_arguments(p) -> None:
    from deepflows.arguments import positive_int, seed

    p.add_argument("--histories", nargs="+", required=True, help="history tables of nos-search (TSV)")
    p.add_argument("--out", required=True, help="the report's folder")
    p.add_argument("--settings", help="the searches' settings YAML (for the re-measurement's child task)")
    p.add_argument("--reevaluate-seeds", type=seed, nargs="*", default=[1, 2, 3],
                   help="child seeds to re-measure the top rules with (default 1 2 3; none: skip)")
    p.add_argument("--top", type=positive_int, default=10, help="how many distinct rules to list (default 10)")
    p.add_argument("--references", nargs="*", default=list(REFERENCES),
                   help="hand-written rules drawn and listed beside the searches' (default: "
                        f"{' '.join(repr(r) for r in REFERENCES)})")  # fmt: skip
    p.add_argument("--cache", help="an evaluation cache to reuse (e.g. the searches')")
    p.add_argument("--workers", type=positive_int, default=2, help="parallel re-measurements (default 2)")


def read_histories(paths) -> "pd.DataFrame":  # noqa: F821
    import pandas as pd

    frames = []
    for path in paths:
        try:
            frame = pd.read_csv(path, sep="\t")
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
            raise UserError(f"{path}: not a nos-search history table: {error}") from None
        missing = {"algorithm", "seed", "index", "rule", "reward", "elapsed", "evaluated"} - set(frame.columns)
        if missing:
            raise UserError(f"{path}: not a nos-search history table (no {', '.join(sorted(missing))} column)")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def plot_curves(histories, out: Path, references: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepflows.outputs import save_figure

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for algorithm, group in histories.groupby("algorithm"):
        colour = COLOURS.get(algorithm)
        curves = [np.maximum.accumulate(run.sort_values("index")["reward"].to_numpy())
                  for _, run in group.groupby("seed")]  # fmt: skip
        for curve in curves:
            ax.plot(np.arange(1, len(curve) + 1), curve, color=colour, lw=0.7, alpha=0.45)
        length = min(map(len, curves))
        mean = np.mean([c[:length] for c in curves], 0)
        ax.plot(np.arange(1, length + 1), mean, color=colour, lw=2.2,
                label=f"{algorithm} (mean of {len(curves)} seed{'s' if len(curves) > 1 else ''})")  # fmt: skip
    for (rule, reward), style in zip(references.items(), ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))):
        ax.axhline(reward, color="black", lw=1.0, ls=style, label=f"{rule} (hand-written)")
    ax.set_xscale("log")
    ax.set_xlabel("rules proposed")
    ax.set_ylabel("best validation accuracy so far (child ConvNet, MNIST)")
    ax.set_title("Neural Optimizer Search: best rule so far (thin lines: single seeds)")
    top = max([histories["reward"].max(), *references.values()])
    ax.set_ylim(max(0.0, top - 0.15), top + 0.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, out, dpi=130)
    plt.close(fig)


def search_table(histories) -> str:
    lines = ["| proposer | seed | rules | evaluated | ok | wall time | best reward | best rule | found at |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (algorithm, seed), run in histories.groupby(["algorithm", "seed"]):
        run = run.sort_values("index")
        best = run.loc[run["reward"].idxmax()]
        lines.append(f"| {algorithm} | {seed} | {len(run)} | {int(run['evaluated'].sum())} | "
                     f"{int((run['status'] == 'ok').sum())} | {run['elapsed'].max() / 60:.1f} min | "
                     f"{best['reward']:.4f} | `{best['rule']}` | {int(best['index']) + 1} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def measure(rules: list[str], seeds: list[int], settings: dict, pool, cache_path) -> dict[str, list[float]]:
    """Each rule's reward with each child seed (cached where a cache is given), rule -> [reward per seed]."""
    from deepflows.automl.search.cache import EvaluationCache
    from deepflows.automl.search.child import evaluate_rule, fingerprint

    rewards: dict[str, list[float]] = {rule: [] for rule in rules}
    for s in seeds:
        child = {**settings["child"], "seed": s}
        cache = EvaluationCache(cache_path, fingerprint(child)) if cache_path else None
        known = cache.get(rules) if cache else {}
        todo = [r for r in rules if r not in known]
        for i, result in pool.run(evaluate_rule, [(r, child) for r in todo]):
            known[todo[i]] = result
            if cache:
                cache.put(todo[i], result)
        if cache:
            cache.close()
        for rule in rules:
            rewards[rule].append(known[rule]["reward"])
    return rewards


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return (float(np.mean(values)) if values else np.nan, float(np.std(values, ddof=1)) if len(values) > 1 else np.nan)


def _shown(mean: float, sd: float) -> str:
    if np.isnan(mean):
        return "-"
    return f"{mean:.4f}" if np.isnan(sd) else f"{mean:.4f} ± {sd:.4f}"


def top_rules(histories, top: int, settings: dict, seeds: list[int], pool, cache_path) -> "pd.DataFrame":  # noqa: F821
    import pandas as pd

    from deepflows.automl.grammar import parse
    from deepflows.automl.search.families import family

    best = histories.sort_values(["reward", "elapsed"], ascending=[False, True]).drop_duplicates("rule").head(top)
    again = measure(list(best["rule"]), seeds, settings, pool, cache_path)
    rows = []
    for _, row in best.iterrows():
        mean, sd = _mean_sd(again[row["rule"]])
        rows.append({"rule": row["rule"], "reward": row["reward"], "learning_rate": row["learning_rate"],
                     "family": family(parse(row["rule"], settings["child"]["units"])),
                     "found_by": f"{row['algorithm']} seed {row['seed']} rule {int(row['index']) + 1}",
                     "remeasured_mean": mean, "remeasured_sd": sd, "remeasured_seeds": len(again[row["rule"]])})  # fmt: skip
    return pd.DataFrame(rows)


def references_markdown(references: dict[str, list[float]], seeds: list[int]) -> str:
    """The hand-written rules' rewards: with the search's child seed, and re-measured like the top rules."""
    lines = [f"| reference rule | reward (search's seed) | re-measured, seeds {', '.join(map(str, seeds)) or '-'} |",
             "|---|---|---|"]  # fmt: skip
    for rule, rewards in references.items():
        lines.append(f"| `{rule}` | {rewards[0]:.4f} | {_shown(*_mean_sd(rewards[1:]))} |")
    return "\n".join(lines) + "\n"


def families_markdown(histories, units: int) -> str:
    """Every distinct rule the searches scored ok, by family: how many, and the best of each."""
    from deepflows.automl.grammar import parse
    from deepflows.automl.search.families import family

    scored = histories[histories["status"] == "ok"].drop_duplicates("rule")
    kinds = [family(parse(rule, units)).split(" ")[0] or "other" for rule in scored["rule"]]
    scored = scored.assign(family=kinds)
    lines = ["| family | distinct rules scored ok | best reward | best rule | found by |", "|---|---|---|---|---|"]
    for name, group in scored.groupby("family"):
        best = group.loc[group["reward"].idxmax()]
        lines.append(f"| {name} | {len(group)} | {best['reward']:.4f} | `{best['rule']}` | {best['algorithm']} seed "
                     f"{best['seed']} rule {int(best['index']) + 1} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def top_markdown(table, seeds) -> str:
    lines = [f"| # | rule | reward (seed 0) | lr | re-measured, seeds {', '.join(map(str, seeds)) or '-'} | family | "
             "found by |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for i, row in enumerate(table.itertuples(), 1):
        again = _shown(row.remeasured_mean, row.remeasured_sd)
        lines.append(f"| {i} | `{row.rule}` | {row.reward:.4f} | {row.learning_rate:g} | {again} | "
                     f"{row.family or '-'} | {row.found_by} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def run(args) -> None:
    from deepflows.automl.grammar import parse
    from deepflows.automl.search.cli import check_child_data
    from deepflows.automl.search.jobs import Pool
    from deepflows.automl.search.settings import load_settings
    from deepflows.outputs import output_directory, write_text

    settings = load_settings(args.settings)
    histories = read_histories(args.histories)
    references = [str(parse(rule, settings["child"]["units"])) for rule in args.references]
    if references or args.reevaluate_seeds:
        check_child_data(settings)
    with output_directory(args.out) as out, Pool("local", args.workers) as pool:
        table = top_rules(histories, args.top, settings, args.reevaluate_seeds, pool, args.cache)
        measured = measure(references, [settings["child"]["seed"], *args.reevaluate_seeds], settings, pool,
                           args.cache)  # fmt: skip
        plot_curves(histories, out / "curves.png", {rule: rewards[0] for rule, rewards in measured.items()})
        write_text(out / "searches.md", search_table(histories))
        table.to_csv(out / "top_rules.tsv", sep="\t", index=False)
        write_text(out / "top_rules.md", top_markdown(table, args.reevaluate_seeds))
        write_text(out / "references.md", references_markdown(measured, args.reevaluate_seeds))
        write_text(out / "families.md", families_markdown(histories, settings["child"]["units"]))
    log.info("report -> %s", args.out)
