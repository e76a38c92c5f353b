#!/usr/bin/env python3
"""Learning-rate decay, as Neural Optimizer Search (Bello et al. 2017): linear cosine decay vs cosine decay vs
stepwise decay (and a constant rate for reference) for SGD with momentum 0.9 on one transfer task (default: the
residual network on sklearn's digits), each schedule with its own learning-rate sweep picked on tune, then
--seeds seeds at the picked rate on test (bench/automl_transfer.py's compare: all runs in one program per split).

    python bench/automl_schedules.py [--task digits] [--seeds 5] [--steps-scale 1.0] [--out results/automl/schedules]

Writes table.csv, table.md, curves.png (test metric vs step) and schedules.png (the learning-rate multipliers
over the run: stepwise, cosine, linear cosine and, thin, noisy linear cosine, on one axis).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from automl_transfer import SGD_GRID, TASKS, compare, plot_curves, scaled_steps, summary_row, write_table
from benchlib import ROOT


def schedules(steps: int) -> dict:
    """name -> the learning-rate multiplier as an optax schedule (1 at step 0)."""
    import optax

    from deepflows.automl.schedules import linear_cosine_decay

    return {
        "constant": optax.constant_schedule(1.0),
        "stepwise": optax.piecewise_constant_schedule(1.0, {steps // 2: 0.1, 3 * steps // 4: 0.1}),
        "cosine": optax.cosine_decay_schedule(1.0, steps),
        "linear cosine": linear_cosine_decay(1.0, steps),
    }


def plot_schedules(steps: int, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepflows.automl.schedules import noisy_linear_cosine_decay

    t = np.arange(steps + 1)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, schedule in schedules(steps).items():
        if name != "constant":
            ax.plot(t, [float(schedule(s)) for s in t], label=name, lw=2)
    noisy = noisy_linear_cosine_decay(1.0, steps)
    ax.plot(t, [float(noisy(s)) for s in t], label="noisy linear cosine", lw=0.6, alpha=0.7)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate / initial learning rate")
    ax.set_title(f"learning-rate decay over a {steps}-step run")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits", choices=list(TASKS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps-scale", type=float, default=1.0)
    parser.add_argument("--out", default=str(ROOT / "results" / "automl" / "schedules"))
    args = parser.parse_args(argv)
    import optax

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = TASKS[args.task]
    task, steps = spec.make(), scaled_steps(spec, args.steps_scale)
    plot_schedules(steps, out / "schedules.png")

    def sgd(schedule):
        return lambda h: optax.sgd(lambda count: h["lr"] * schedule(count), momentum=0.9)

    table = {name: (SGD_GRID, sgd(schedule)) for name, schedule in schedules(steps).items()}
    started = time.perf_counter()
    results, timing = compare(task, spec, steps, table, list(table), [], args.seeds)
    rows = [summary_row(args.task, task, name, result) for name, result in results.items()]
    text = write_table(rows, out, {})
    by_label = {k: r["runs"] for k, r in results.items() if r["runs"] is not None}
    plot_curves({f"{args.task}: {task.name}, SGD momentum 0.9, {steps} steps": (f"{task.metric} ({spec.test_split})",
                                                                                 by_label)},
                out / "curves.png", f"learning-rate decay: {args.seeds} seeds at the lr picked on tune")  # fmt: skip
    print(text)
    print(f"total {time.perf_counter() - started:.0f} s ({timing}); wrote {out}/table.csv, table.md, curves.png, "
          "schedules.png")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
