"""A training run's DIR/metrics.jsonl (one JSON object a line: split "train" per log interval, "tune" per
evaluation, "init" for a warm start's starting weights) and DIR/metrics.png drawn from it."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


class MetricsLog:
    """DIR/metrics.jsonl, cut back to the resumed step so a resumed run does not repeat lines."""

    def __init__(self, path: Path, start_step: int):
        self.path = path
        kept = []
        if path.exists() and start_step > 0:  # a fresh run keeps nothing (a killed attempt's step-0 line)
            for line in path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    if json.loads(line)["step"] <= start_step:
                        kept.append(line)
        path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


def plot_metrics(metrics: Path, out: Path, *, train=(), tune=(), loss="loss", metrics_label="accuracy") -> None:
    """The loss of train (per log interval) and tune (per evaluation) against step, and beside it the metrics
    named in `train` and `tune` for each split (the first drawn in the split's style, the others dashed); a
    task's `plotted` gives them, the loss axis label and the metrics panel's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for split, style, keys in (("train", "-", train), ("tune", "o-", tune)):
        rows = [r for r in records if r.get("split") == split]
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        ax_loss.plot(steps, [r["loss"] for r in rows], style, label=split, markersize=3)
        for i, key in enumerate(keys):
            ax_acc.plot(steps, [r[key] for r in rows], "s--" if i else style, label=f"{split} {key.replace('_', ' ')}",
                        markersize=3)  # fmt: skip
    start = [r for r in records if r.get("split") == "init" and "loss" in r]
    if start:  # fine-tuning: the starting weights on the tune split
        ax_loss.plot([0], [start[0]["loss"]], "*", label="tune, init model", markersize=8)
        if tune:
            ax_acc.plot([0], [start[0][tune[0]]], "*", label=f"tune {tune[0].replace('_', ' ')}, init model",
                        markersize=8)  # fmt: skip
    ax_loss.set(xlabel="step", ylabel=loss, title="loss")
    ax_acc.set(xlabel="step", ylabel=metrics_label, title=metrics_label, ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a task may plot nothing beside the loss
            ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(out)
