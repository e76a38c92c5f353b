"""`deepflows nas-report`: live searches' model tables -> progress, best cells, and the best cells retrained.

    deepflows nas-report --models results/automl/nas/live/*.tsv --out results/automl/nas/report
                         [--settings config/automl/nas.yaml] [--retrain-seeds 0 1 2 3 4] [--retrain-steps N]

Writes progress.png (each dot a model: its validation accuracy when it finished, one panel per search, the
best so far as a line), cells.png (each search's best cell drawn as a graph), searches.md (per search: models
done, failed and lost, time, models per hour, best cell), and retrain.md / retrain.tsv: each search's best cell
and the hand-designed cell retrained from scratch with other seeds on the full budget (the search's reward is
the maximum of many one-seed measurements, so it flatters the winner; the retraining does not).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from deepflows.automl.nas import cells
from deepflows.errors import UserError

log = logging.getLogger("deepflows.automl")
COLUMNS = {"id", "cell", "parent", "status", "reward", "started", "finished"}


def add_arguments(p) -> None:
    from deepflows.arguments import positive_int, seed

    p.add_argument("--models", nargs="+", required=True, help="model tables of nas-search (TSV), one per search")
    p.add_argument("--out", required=True, help="the report's folder")
    p.add_argument("--settings", help="the searches' settings YAML (the retraining's child task)")
    p.add_argument("--retrain-seeds", type=seed, nargs="*", default=[0, 1, 2, 3, 4],
                   help="seeds to retrain the best cells with (default 0-4; none: skip)")
    p.add_argument("--retrain-steps", type=positive_int,
                   help="training steps of the retraining (default: 4x the search's child.steps)")


def read_models(path) -> "pd.DataFrame":  # noqa: F821
    import pandas as pd

    try:
        frame = pd.read_csv(path, sep="\t")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise UserError(f"{path}: not a nas-search model table: {error}") from None
    missing = COLUMNS - set(frame.columns)
    if missing:
        raise UserError(f"{path}: not a nas-search model table (no {', '.join(sorted(missing))} column)")
    frame["search"] = Path(path).name.removesuffix(".tsv")
    return frame


def search_summary(frame) -> dict:
    done = frame[frame.status == "done"]
    hours = (frame.finished.max() - frame.started.min()) / 3600
    best = done.loc[done.reward.idxmax()]
    return {"search": frame.search.iloc[0], "done": len(done), "failed": int((frame.status == "failed").sum()),
            "lost": int((frame.status == "lost").sum()), "hours": hours, "models_per_hour": len(done) / hours,
            "best_reward": float(best.reward), "best_cell": best.cell}  # fmt: skip


def plot_progress(frames, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(frames), figsize=(5 * len(frames), 4), sharey=True, squeeze=False)
    for ax, frame in zip(axes[0], frames):
        done = frame[frame.status == "done"].sort_values("finished")
        hours = (done.finished - frame.started.min()) / 3600
        ax.scatter(hours, done.reward, s=9, alpha=0.6, color="tab:blue", label="a model")
        ax.step(hours, done.reward.cummax(), where="post", color="tab:red", label="best so far")
        ax.set_title(frame.search.iloc[0])
        ax.set_xlabel("hours since the search started")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("reward: accuracy on 500 held-out digits")
    axes[0][0].legend(loc="lower right")
    fig.suptitle("Live architecture searches: every model trained, by the time it finished")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def draw_cell(ax, cell, title: str) -> None:
    """The cell as a graph: nodes 0 (input) to 3 (output) on a line, one arc per edge that is not `none`, labelled
    with its operation; edges that cannot change the output are grey and dashed."""
    from matplotlib.patches import Circle, FancyArrowPatch

    live = cells.live_edges(cell)
    xs = np.arange(cells.NODES) * 2.0
    for k, (to, src) in enumerate(cells.EDGES):
        if cell[k] == 0:
            continue
        bend = 0.5 if k % 2 else -0.5  # alternate sides, so that edges of one span never overlap
        colour, style = ("black", "-") if live[k] else ("grey", "--")
        ax.add_patch(FancyArrowPatch((xs[src], 0), (xs[to], 0), connectionstyle=f"arc3,rad={bend}",
                                     arrowstyle="-|>", mutation_scale=12, color=colour, linestyle=style,
                                     shrinkA=14, shrinkB=14))  # fmt: skip
        ax.text((xs[src] + xs[to]) / 2, -bend * (xs[to] - xs[src]) / 2, cells.OPS[cell[k]], ha="center",
                va="center", fontsize=8, color=colour, bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})  # fmt: skip
    for node, x in enumerate(xs):
        label = {0: "in", cells.NODES - 1: "out"}.get(node, str(node))
        ax.add_patch(Circle((x, 0), 0.3, color="tab:orange", zorder=3))
        ax.text(x, 0, label, ha="center", va="center", zorder=4, fontsize=9)
    ax.set_xlim(-0.8, xs[-1] + 0.8)
    ax.set_ylim(-1.9, 1.9)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=9)


def plot_cells(named_cells: list[tuple[str, list[int]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(named_cells), 1, figsize=(7, 2.6 * len(named_cells)), squeeze=False)
    for ax, (title, cell) in zip(axes[:, 0], named_cells):
        draw_cell(ax, cell, title)
    fig.text(0.5, 0.01, "node j sums its inputs' operations; grey dashed: an edge that cannot reach the output",
             ha="center", fontsize=8)  # fmt: skip
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out, dpi=120)
    plt.close(fig)


def retrain_table(named: list[tuple[str, list[int]]], child: dict, seeds: list[int], steps: int):
    """Each named cell retrained from scratch with `seeds` side by side (deepflows.automl.nas.child.retrain)."""
    import time

    import pandas as pd

    from deepflows.automl.nas.child import live_params, retrain

    rows = []
    for name, cell in named:
        start = time.perf_counter()
        accuracies = retrain(cell, child, seeds, steps)
        ok = np.array([a for a in accuracies if a is not None])
        rows.append({"model": name, "cell": cells.to_text(cell), "params": live_params(cell, child), "steps": steps,
                     "seeds": len(seeds), "ok": len(ok), "mean": float(ok.mean()) if len(ok) else float("nan"),
                     "sd": float(ok.std(ddof=1)) if len(ok) > 1 else 0.0,
                     "accuracies": " ".join("failed" if a is None else f"{a:.4f}" for a in accuracies),
                     "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
        log.info("retrained %s %s: %.4f (%d of %d seeds ok)", name, rows[-1]["cell"], rows[-1]["mean"], len(ok),
                 len(seeds))  # fmt: skip
    return pd.DataFrame(rows)


def retrain_markdown(table, seeds: list[int]) -> str:
    steps = table.steps.iloc[0]
    lines = [f"Retrained from scratch on the 4,000 train digits, {steps} steps, seeds {' '.join(map(str, seeds))}; "
             "accuracy on the 1,000 validation digits (no search scored them)", "",
             "| model | cell | live params | mean | sd | seeds ok | per seed | seconds |", "|---" * 8 + "|"]  # fmt: skip
    for row in table.itertuples():
        cell = _cell_md(row.cell)
        lines.append(f"| {row.model} | `{cell}` | {row.params} | {row.mean:.4f} | {row.sd:.4f} | {row.ok} | "
                     f"{row.accuracies} | {row.seconds} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _cell_md(text: str) -> str:
    return text.replace("|", "\\|")  # a cell's text is full of a markdown table's separator


def run(args) -> None:
    from deepflows.automl.nas.settings import load_settings
    from deepflows.outputs import check_output_dir, write_text

    frames = [read_models(path) for path in args.models]
    for frame in frames:
        if not (frame.status == "done").any():
            raise UserError(f"{frame.search.iloc[0]}: no model finished; nothing to report")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check_output_dir(out)
    summaries = [search_summary(frame) for frame in frames]
    lines = ["| search | done | failed | lost | hours | models/hour | best reward | best cell |", "|---" * 8 + "|"]
    for s in summaries:
        lines.append(f"| {s['search']} | {s['done']} | {s['failed']} | {s['lost']} | {s['hours']:.2f} | "
                     f"{s['models_per_hour']:.0f} | {s['best_reward']:.4f} | `{_cell_md(s['best_cell'])}` |")  # fmt: skip
    write_text(out / "searches.md", "\n".join(lines) + "\n")
    plot_progress(frames, out / "progress.png")
    best = [(f"{s['search']}: best found ({s['best_reward']:.3f})", list(cells.parse(s["best_cell"])))
            for s in summaries]  # fmt: skip
    plot_cells([*best, ("hand-designed (ResNet-like)", list(cells.HAND_DESIGNED))], out / "cells.png")
    if args.retrain_seeds:
        settings = load_settings(args.settings)
        steps = args.retrain_steps or 4 * settings["child"]["steps"]
        named = [(s["search"], list(cells.parse(s["best_cell"]))) for s in summaries]
        named.append(("hand-designed", list(cells.HAND_DESIGNED)))
        table = retrain_table(named, settings["child"], args.retrain_seeds, steps)
        write_text(out / "retrain.tsv", table.to_csv(sep="\t", index=False))
        write_text(out / "retrain.md", retrain_markdown(table, args.retrain_seeds))
    log.info("report -> %s", out)
