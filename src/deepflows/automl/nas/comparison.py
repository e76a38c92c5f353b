"""The controlled comparison of regularized evolution (Real et al. 2019) on tabular benchmarks: the same budget of
models for every algorithm, hundreds of independent runs, one table lookup per model.

One run = (algorithm, table, seed, budget) -> the trace of the models evaluated in order: the reward the search
saw (ONE training seed's validation score, drawn at random) and the model's seed-mean. The final pick is the
evaluated model with the highest observed reward; its figure is its seed-mean validation score, which the search
never observed directly. The tables have no test split, so that seed-mean VALIDATION score stands in for the
paper's test accuracy. Regret = the best cell's seed-mean minus the pick's.

Algorithms, all through the proposers' propose/observe loop (deepflows.automl.search.proposers, .controller):
aging and non-aging evolution (population P, tournament S), random search and Large-Scale Evolution's pairwise
loop (population P seeded with cells.TRIVIAL, or the all-zeros cell off NAS-Bench-201) one model at a time, and
the REINFORCE LSTM controller, which proposes `batch` models per policy-gradient step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from deepflows.automl.nas import cells
from deepflows.automl.nas.algorithms import ALGORITHMS, make_proposer
from deepflows.automl.nas.tabular import Table
from deepflows.errors import UserError

TABLE_NOTE = ("The tables have no test split: 'final' is the pick's seed-mean VALIDATION score, which the search "
              "never observed (it saw one random seed per model).")  # fmt: skip


@dataclass(frozen=True)
class Settings:
    population: int = 20
    sample: int = 5
    learning_rate: float = 0.01  # the controller's Adam rate
    batch: int = 10  # controller proposals per policy-gradient step
    hidden: int = 32
    # no entropy bonus: with Adam the update is then invariant to the reward's scale, which differs by orders of
    # magnitude between the tables (accuracy in %, negated MSE)
    entropy_weight: float = 0.0
    baseline_decay: float = 0.9


_SHARED: dict = {}  # (choices, settings) -> the controller object every run of that space reuses


def _controller(table: Table, settings: Settings, seed: int):
    """A REINFORCE controller with fresh weights from `seed`. JAX compiles its steps per controller object, which
    costs more than a whole run, so one object per space and settings is reused: each run loads into it the
    state (weights, Adam's moments, baseline) and sampling key of a newly built controller."""
    from deepflows.automl.search.controller import RuleController

    fresh = RuleController(table.choices, (len(table.choices),), hidden=settings.hidden,
                           learning_rate=settings.learning_rate, entropy_weight=settings.entropy_weight,
                           baseline_decay=settings.baseline_decay, seed=seed)  # fmt: skip
    shared = _SHARED.setdefault((tuple(table.choices), settings), fresh)
    if shared is not fresh:
        shared.restore(fresh.state())
        shared.key = fresh.key
    return shared


def proposer(algorithm: str, table: Table, settings: Settings, seed: int):
    trivial = cells.TRIVIAL if table.bench == "nasbench201" else [0] * len(table.choices)
    try:
        return make_proposer(algorithm, table.sample, table.mutate, trivial, settings.population, settings.sample,
                             lambda: _controller(table, settings, seed))  # fmt: skip
    except ValueError as error:
        raise UserError(str(error)) from None


def run(algorithm: str, table: Table, seed: int, budget: int, settings: Settings) -> dict:
    """The trace of one search: keys, observed rewards and seed-means of the models in evaluation order. A
    function of (algorithm, table, seed, budget, settings): proposals and training noise have their own streams."""
    search = proposer(algorithm, table, settings, seed)
    rng, noise = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    batch = settings.batch if algorithm == "reinforce" else 1
    keys, rewards, means = [], [], []
    while len(keys) < budget:
        proposals = search.propose(min(batch, budget - len(keys)), rng)
        scores = [table.query(c, noise) for c in proposals]
        search.observe(proposals, scores)
        keys += [table.key(c) for c in proposals]
        rewards += scores
        means += [table.mean(c) for c in proposals]
    return {"keys": keys, "rewards": rewards, "means": means}


def best_so_far(trace: dict) -> np.ndarray:
    """After each model: the seed-mean of the model with the highest observed reward so far (first on ties)."""
    rewards, means = np.asarray(trace["rewards"]), np.asarray(trace["means"])
    pick = np.zeros(len(rewards), dtype=int)
    for i in range(1, len(rewards)):
        pick[i] = i if rewards[i] > rewards[pick[i - 1]] else pick[i - 1]
    return means[pick]


def summary(trace: dict, best_key: str, best_mean: float) -> dict:
    """The final pick (highest observed reward), its seed-mean, regret, and whether the best cell was evaluated
    at all or picked."""
    i = int(np.argmax(trace["rewards"]))
    final = float(trace["means"][i])
    return {"pick": trace["keys"][i], "final": final, "regret": best_mean - final,
            "found_best": best_key in trace["keys"], "picked_best": trace["keys"][i] == best_key}  # fmt: skip


def run_row(algorithm: str, table: Table, seed: int, budget: int, settings: Settings) -> dict:
    """One run as a row of runs.tsv: what it was, its summary and its best-so-far curve (comma-separated)."""
    best_cell, best_mean = table.best
    trace = run(algorithm, table, seed, budget, settings)
    return {"bench": table.bench, "dataset": table.dataset, "metric": table.metric, "sign": table.sign,
            "algorithm": algorithm, "seed": seed, "budget": budget, "best": best_mean,
            **summary(trace, table.key(best_cell), best_mean),
            "curve": ",".join(f"{v:.6g}" for v in best_so_far(trace))}  # fmt: skip


def run_rows(algorithms, table: Table, seeds, budget: int, settings: Settings) -> list[dict]:
    return [run_row(a, table, seed, budget, settings) for a in algorithms for seed in seeds]


def tune(table: Table, seeds, budget: int, grid: list[tuple[int, int]], rates: list[float], base: Settings):
    """Aging evolution's (P, S) and the controller's learning rate, each picked by the mean final seed-mean over
    `seeds` runs (seeds disjoint from the reported runs'). Returns the tuned settings and the grid as rows."""
    rows = []
    for population, sample in grid:
        trial = replace(base, population=population, sample=sample)
        finals = [r["final"] for r in run_rows(["aging"], table, seeds, budget, trial)]
        rows.append({"algorithm": "aging", "population": population, "sample": sample, "learning_rate": None,
                     **_interval(finals)})  # fmt: skip
    for rate in rates:
        finals = [r["final"] for r in run_rows(["reinforce"], table, seeds, budget, replace(base, learning_rate=rate))]
        rows.append({"algorithm": "reinforce", "population": None, "sample": None, "learning_rate": rate,
                     **_interval(finals)})  # fmt: skip
    evolution = max((r for r in rows if r["algorithm"] == "aging"), key=lambda r: r["mean"])
    controller = max((r for r in rows if r["algorithm"] == "reinforce"), key=lambda r: r["mean"])
    chosen = replace(base, population=evolution["population"], sample=evolution["sample"],
                     learning_rate=controller["learning_rate"])  # fmt: skip
    return chosen, rows


def _interval(values) -> dict:
    """Mean and the half-width of its 95% t-interval."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0
    return {"runs": len(values), "mean": float(values.mean()), "ci95": float(half)}


def curves(runs_df) -> np.ndarray:
    """The runs' best-so-far curves as a (runs, budget) array of signed scores."""
    return np.array([[float(v) for v in c.split(",")] for c in runs_df["curve"]])


def final_table(runs_df):
    """Per bench, dataset and algorithm: the pick's seed-mean (in the metric's own units and sign; mean and
    median, as a loss's mean is ruled by a few bad picks), regret, and the fraction of runs that evaluated / picked
    the best cell."""
    import pandas as pd

    rows = []
    for (bench, dataset, algorithm), g in runs_df.groupby(["bench", "dataset", "algorithm"], sort=False):
        final, regret = _interval(g["final"] * g["sign"]), _interval(g["regret"])
        rows.append({"bench": bench, "dataset": dataset, "algorithm": algorithm, "runs": len(g),
                     "budget": int(g["budget"].iloc[0]), "metric": g["metric"].iloc[0],
                     "final": final["mean"], "final_ci95": final["ci95"],
                     "final_median": float((g["final"] * g["sign"]).median()), "regret": regret["mean"],
                     "regret_ci95": regret["ci95"], "found_best": g["found_best"].mean(),
                     "picked_best": g["picked_best"].mean()})  # fmt: skip
    return pd.DataFrame(rows)


# (a, b, fraction of the budget): the paper's claims, each tested as "a vs b" at that point of the search
CLAIMS = (("aging", "reinforce", 1.0), ("reinforce", "random", 1.0), ("aging", "random", 1.0),
          ("aging", "random", 0.25), ("aging", "reinforce", 0.25), ("aging", "non-aging", 1.0),
          ("aging", "pairwise", 1.0))  # fmt: skip


def claims(runs_df):
    """Each claim as measured per dataset: both means of the pick's seed-mean (in the metric's units) at that
    fraction of the budget, their difference, Welch's two-sided p-value (the runs are independent; the verdict,
    which is ahead where p < 0.05) and the Mann-Whitney U test's (ranks: robust to a loss's heavy tail)."""
    import pandas as pd
    from scipy import stats

    rows = []
    for (bench, dataset), g in runs_df.groupby(["bench", "dataset"], sort=False):
        by = {a: curves(h) for a, h in g.groupby("algorithm")}
        for a, b, fraction in CLAIMS:
            if a not in by or b not in by:
                continue
            at = max(1, round(fraction * by[a].shape[1])) - 1
            sign = g["sign"].iloc[0]
            x, y = by[a][:, at] * sign, by[b][:, at] * sign
            differ = np.ptp(np.r_[x, y]) > 0
            p = float(stats.ttest_ind(x, y, equal_var=False).pvalue) if differ else 1.0
            p_rank = float(stats.mannwhitneyu(x, y).pvalue) if differ else 1.0  # robust to heavy-tailed losses
            ahead = a if sign * (x.mean() - y.mean()) > 0 else b
            verdict = "no significant difference" if p >= 0.05 else f"{ahead} ahead"
            rows.append({"bench": bench, "dataset": dataset, "claim": f"{a} vs {b}", "at_models": at + 1,
                         "a": x.mean(), "b": y.mean(), "diff": x.mean() - y.mean(), "p": p, "p_rank": p_rank,
                         "verdict": verdict})
    return pd.DataFrame(rows)


def table_markdown(runs_df) -> str:
    """The final table and the claims, as markdown."""
    final = final_table(runs_df)
    lines = [TABLE_NOTE, "",
             "| bench | dataset | algorithm | runs | budget | metric | final (mean ± 95% CI) | final (median) "
             "| regret (mean ± 95% CI) | found best | picked best |", "|" + "---|" * 11]  # fmt: skip
    for r in final.itertuples():
        lines.append(f"| {r.bench} | {r.dataset} | {r.algorithm} | {r.runs} | {r.budget} | {r.metric} | "
                     f"{r.final:.4g} ± {r.final_ci95:.2g} | {r.final_median:.4g} | "
                     f"{r.regret:.3g} ± {r.regret_ci95:.2g} | {r.found_best:.0%} | {r.picked_best:.0%} |")  # fmt: skip
    lines += ["", "Claims (mean seed-mean of the pick after `at models`; two-sided tests):", "",
              "| bench | dataset | claim | at models | a | b | a - b | p (Welch) | p (Mann-Whitney) "
              "| verdict (Welch) |", "|" + "---|" * 10]  # fmt: skip
    for r in claims(runs_df).itertuples():
        lines.append(f"| {r.bench} | {r.dataset} | {r.claim} | {r.at_models} | {r.a:.4g} | {r.b:.4g} | "
                     f"{r.diff:+.3g} | {r.p:.2g} | {r.p_rank:.2g} | {r.verdict} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_curves(runs_df, out_png) -> None:
    """One panel per dataset: the best-so-far pick's seed-mean (metric's own units) vs models evaluated, mean
    line and 95% t-band per algorithm, the best cell dashed. Minimised metrics (losses) on a log axis, their mean
    and band taken over the log (a geometric mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    groups = list(runs_df.groupby(["bench", "dataset"], sort=False))
    benches = list(dict.fromkeys(b for (b, _), _ in groups))
    ncols = max(sum(b == bench for (b, _), _ in groups) for bench in benches)
    fig, axes = plt.subplots(len(benches), ncols, figsize=(4.6 * ncols, 3.6 * len(benches)), squeeze=False)
    colors = dict(zip(ALGORITHMS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    used = set()
    for (bench, dataset), g in groups:
        row = benches.index(bench)
        col = sum(b == bench for (b, _), _ in groups[: groups.index(((bench, dataset), g))])
        ax, sign, metric = axes[row, col], g["sign"].iloc[0], g["metric"].iloc[0]
        used.add((row, col))
        early = []
        for algorithm, h in g.groupby("algorithm", sort=False):
            c = curves(h) * sign
            if sign < 0:  # a loss spans decades and a few lucky-seed picks dominate its mean: average its log
                c = np.log(c)
            x = np.arange(1, c.shape[1] + 1)
            mean = c.mean(0)
            half = stats.t.ppf(0.975, len(c) - 1) * c.std(0, ddof=1) / np.sqrt(len(c))
            back = np.exp if sign < 0 else (lambda v: v)
            ax.plot(x, back(mean), color=colors[algorithm], label=algorithm, lw=1.4)
            ax.fill_between(x, back(mean - half), back(mean + half), color=colors[algorithm], alpha=0.2, lw=0)
            early.append(back(mean[len(mean) // 10]))
        best = g["best"].iloc[0] * sign
        ax.axhline(best, color="k", ls="--", lw=0.8, label="best cell")
        if sign > 0:
            ax.set_ylim(min(early), best + 0.1 * (best - min(early)))
        else:
            ax.set_yscale("log")
            ax.set_ylim(best / 1.5, max(early))
        ax.set_title(f"{bench}: {dataset} ({len(g) // g['algorithm'].nunique()} runs each)", fontsize=9)
        ax.set_xlabel("models evaluated")
        ax.set_ylabel(f"pick's seed-mean {metric}" + (" (%)" if sign > 0 else "\n(MSE; geometric mean over runs)"))
        ax.grid(alpha=0.3)
    spare = [axes[r, c] for r in range(len(benches)) for c in range(ncols) if (r, c) not in used]
    for ax in spare:
        ax.set_visible(False)
    fig.suptitle("Pick so far (highest observed one-seed validation score) scored by its seed-mean validation score "
                 "(the tables have no test split): mean and 95% band over runs", fontsize=10)  # fmt: skip
    fig.tight_layout()
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if spare:  # the legend in the first empty panel's place, clear of the curves
        fig.legend(handles, labels, loc="center", bbox_to_anchor=spare[0].get_position().bounds, fontsize=11)
    else:
        axes[0, 0].legend(fontsize=8, loc="lower right")
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
