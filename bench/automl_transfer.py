#!/usr/bin/env python3
"""Transfer of optimizers, as Neural Optimizer Search (Bello et al. 2017): PowerSign and AddSign (with and without
linear sign decay), searched rules (--rule), Adam, SGD with momentum 0.9 and RMSProp, each with its own
learning-rate sweep, on three tasks: the MNIST ConvNet (deepflows.automl.tasks.mnist), a character-level
Transformer on the Austen novels (tasks.chars) and a residual network on sklearn's digits (tasks.digits).

Per task and optimizer: a log grid of learning rates trained with seed 0 and scored on the task's tune split,
then --seeds seeds at the picked rate scored on its test split (MNIST: `validation`, where searched rules were
chosen, so a searched rule's MNIST row is optimistic). Each phase is one train_many call (the runs vmapped).

    python bench/automl_transfer.py [--tasks mnist,chars,digits] [--optimizers adam,...] [--rule TEXT ...]
                                    [--seeds 5] [--steps-scale 1.0] [--out results/automl/transfer]

Writes table.csv, table.md and curves.png (test metric vs step, mean +- sd band per optimizer, a panel per task)
and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT

from deepflows.automl.grammar import parse
from deepflows.automl.trainer import Runs
from deepflows.errors import UserError

SHARED = ROOT.parent / "shared" / "data"
ADAPTIVE_GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)  # Adam, RMSProp
SGD_GRID = (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)  # SGD with momentum, PowerSign, AddSign: steps on the gradient's scale
RULE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # a searched rule's scale is not known: one value a decade


@dataclass
class TaskSpec:
    make: object  # () -> task
    steps: int  # at --steps-scale 1
    eval_every: int
    test_split: str


TASKS = {
    "mnist": TaskSpec(lambda: _mnist(), 800, 100, "validation"),
    "chars": TaskSpec(lambda: _chars(), 300, 50, "test"),
    "digits": TaskSpec(lambda: _digits(), 600, 100, "test"),
}


def _mnist():
    from deepflows.automl.tasks.mnist import MnistTask

    return MnistTask(SHARED / "automl" / "mnist_5k.csv.gz", train_split="fit", width=8)


def _chars():
    from deepflows.automl.tasks.chars import CharsTask

    return CharsTask(SHARED / "text" / "books")


def _digits():
    from deepflows.automl.tasks.digits import DigitsTask

    return DigitsTask()


def optimizers(steps: int, rules: list[str]) -> dict:
    """name -> (learning-rate grid, make(h) -> optax transformation; h["lr"] the run's rate, h["tokens"] a rule's
    tokens)."""
    import optax

    from deepflows.automl.interpreter import rule_transform
    from deepflows.automl.optimizers import addsign, linear_sign_decay, powersign

    ld = linear_sign_decay(steps)
    table = {
        "powersign": (SGD_GRID, lambda h: powersign(h["lr"])),
        "powersign-ld": (SGD_GRID, lambda h: powersign(h["lr"], sign_decay=ld)),
        "addsign": (SGD_GRID, lambda h: addsign(h["lr"])),
        "addsign-ld": (SGD_GRID, lambda h: addsign(h["lr"], sign_decay=ld)),
        "adam": (ADAPTIVE_GRID, lambda h: optax.adam(h["lr"])),
        "sgd-momentum": (SGD_GRID, lambda h: optax.sgd(h["lr"], momentum=0.9)),
        "rmsprop": (ADAPTIVE_GRID, lambda h: optax.rmsprop(h["lr"])),
    }
    if rules:  # one rule transformation for all rules: which rule is data (the run's tokens)
        table["rule"] = (RULE_GRID, lambda h: rule_transform(h["tokens"], h["lr"], steps))
    return table


def compare(task, spec: TaskSpec, steps: int, table: dict, names: list[str], rules: list[str], seeds: int):
    """Per optimizer name (a rule: `rule TEXT`): the learning rate picked on tune (seed 0 over its grid) and
    `seeds` runs at it on the test split. All optimizers train side by side, one compiled program per split
    (deepflows.automl.optimizers.choice picks each run's optimizer)."""
    from deepflows.automl.optimizers import choice
    from deepflows.automl.trainer import train_many

    kinds = list(table)
    makes = [table[k][1] for k in kinds]

    def make_tx(h):
        return choice([make(h) for make in makes], h["kind"])

    def kind(name):
        return kinds.index("rule" if name.startswith("rule ") else name)

    def hparams(rows):  # rows: (name, lr); a non-rule run carries the first rule's tokens, unused
        h = {"kind": np.array([kind(n) for n, _ in rows], np.int32), "lr": np.array([lr for _, lr in rows], np.float32)}
        if rules:
            h["tokens"] = np.stack([parse(n[5:] if n.startswith("rule ") else rules[0]).array for n, _ in rows])
        return h

    # the progress test stays off: a slow start is the optimizer's result here, not a failed candidate
    common = dict(eval_every=spec.eval_every, progress=np.inf)
    start = time.perf_counter()
    rows = [(n, lr) for n in names for lr in table["rule" if n.startswith("rule ") else n][0]]
    sweep = train_many(task, make_tx, hparams(rows), [0] * len(rows), steps, split="tune", **common)
    timing = {"sweep_s": time.perf_counter() - start}
    results, picked = {}, []
    for name in names:
        at = [i for i, (n, _) in enumerate(rows) if n == name]
        final = sweep.final[at]
        score = final if task.higher_is_better else -final
        best = None if np.all(np.isnan(score)) else int(np.nanargmax(score))
        results[name] = {"lr": np.nan if best is None else float(rows[at[best]][1]), "sweep": final,
                         "edge": best in (0, len(at) - 1), "runs": None}  # fmt: skip
        if best is not None:
            picked.append(name)
    start = time.perf_counter()
    rows = [(n, results[n]["lr"]) for n in picked for _ in range(seeds)]
    if rows:
        runs = train_many(task, make_tx, hparams(rows), list(range(seeds)) * len(picked), steps,
                          split=spec.test_split, **common)  # fmt: skip
        for i, name in enumerate(picked):
            at = slice(i * seeds, (i + 1) * seeds)
            results[name]["runs"] = Runs(runs.step, runs.loss[at], runs.metric[at], runs.status[at])
    timing["seeds_s"] = time.perf_counter() - start
    return results, timing


def summary_row(task_name: str, task, optimizer: str, result: dict) -> dict:
    runs = result["runs"]
    final = np.array([]) if runs is None else runs.final[~np.isnan(runs.final)]
    return {"task": task_name, "metric": task.metric, "optimizer": optimizer, "lr": result["lr"],
            "lr_at_grid_edge": result["edge"], "n": len(final),
            "failed": 0 if runs is None else int(np.sum(np.isnan(runs.final))),
            "mean": float(final.mean()) if len(final) else np.nan,
            "sd": float(final.std(ddof=1)) if len(final) > 1 else np.nan,
            "sweep_tune": " ".join(f"{x:.4g}" for x in result["sweep"])}  # fmt: skip


def write_table(rows: list[dict], out: Path, notes: dict[str, str]) -> str:
    with open(out / "table.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| task (metric) | optimizer | lr (picked on tune) | mean +- sd | n | tune metric over the lr grid |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lr = f"{r['lr']:.0e}" + (" (grid edge)" if r["lr_at_grid_edge"] else "")
        value = f"{r['mean']:.4f} +- {r['sd']:.4f}" if r["n"] else "all failed"
        label = r["optimizer"] + notes.get((r["task"], r["optimizer"]), "")
        lines.append(f"| {r['task']} ({r['metric']}) | {label} | {lr} | {value} | {r['n']} | {r['sweep_tune']} |")
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    return text


def plot_curves(curves: dict, out_png: Path, title: str) -> None:
    """curves: panel name -> (ylabel, {label: Runs}); mean +- sd band of the runs' metric vs step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4.2), squeeze=False)
    for ax, (panel, (ylabel, by_label)) in zip(axes[0], curves.items()):
        for label, runs in by_label.items():
            mean, sd = np.nanmean(runs.metric, 0), np.nanstd(runs.metric, 0)
            (line,) = ax.plot(runs.step, mean, label=label, lw=1.4)
            ax.fill_between(runs.step, mean - sd, mean + sd, color=line.get_color(), alpha=0.2)
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def scaled_steps(spec: TaskSpec, scale: float) -> int:
    return max(1, round(spec.steps * scale / spec.eval_every)) * spec.eval_every


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated: " + ", ".join(TASKS))
    parser.add_argument("--optimizers", default=None, help="comma-separated subset of the built-in optimizers")
    parser.add_argument("--rule", action="append", default=[], help="a searched rule's text (repeatable)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiplies every task's step count")
    parser.add_argument("--out", default=str(ROOT / "results" / "automl" / "transfer"))
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {unknown}: choose from {list(TASKS)}")
    for text in args.rule:
        try:
            parse(text)
        except UserError as error:
            parser.error(f"--rule {text!r}: {error}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, curves, notes, timings = [], {}, {}, {}
    started = time.perf_counter()
    for name in tasks:
        spec = TASKS[name]
        task, steps = spec.make(), scaled_steps(spec, args.steps_scale)
        table = optimizers(steps, args.rule)
        names = args.optimizers.split(",") if args.optimizers else [k for k in table if k != "rule"]
        if set(names) - set(table) or "rule" in names:
            parser.error(f"unknown optimizer(s) in {names}: choose from {[k for k in table if k != 'rule']}")
        names += [f"rule {text}" for text in args.rule]
        if name == "mnist":
            notes.update({(name, f"rule {text}"): " (chosen on this split: optimistic)" for text in args.rule})
        results, timings[name] = compare(task, spec, steps, table, names, args.rule, args.seeds)
        for optimizer, result in results.items():
            rows.append(summary_row(name, task, optimizer, result))
            print(rows[-1], flush=True)
        print(name, {k: round(v) for k, v in timings[name].items()}, flush=True)
        by_label = {k: r["runs"] for k, r in results.items() if r["runs"] is not None}
        curves[f"{name}: {task.name}, {steps} steps"] = (f"{task.metric} ({spec.test_split})", by_label)
    total = time.perf_counter() - started
    text = write_table(rows, out, notes)
    plot_curves(curves, out / "curves.png", f"optimizer transfer: {args.seeds} seeds at the lr picked on tune")
    print(text)
    print("seconds per task (sweep, seeds; compilation included):", timings)
    print(f"total {total:.0f} s; wrote {out}/table.csv, table.md, curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
