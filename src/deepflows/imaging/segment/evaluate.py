"""`deepflows segment-eval`: segmentation models and the task's classical baseline on its test sets.

    deepflows segment-eval --task STORE.zarr --models v3plus=DIR v3=DIR fcn=DIR --out DIR
                           [--tile 512] [--tolerance 2] [--band 4]

Every test split of the task store (`test`, and the extra test sets: DSB2018's human mask, the TCIA tile) is
predicted region by region, whole (tiles with context, as `deepflows segment`), by each model and by the
classical baseline (deepflows.imaging.segment.tasks.baseline), and scored against the region's labels
(deepflows.imaging.segment.metrics): mIoU and IoU per class over the split's pixels, the boundary F1 score
(BF, boundaries matched within --tolerance px) and the trimap mIoU (pixels within --band px of a true
boundary). Writes, in --out:

    metrics.csv        split, method, miou, boundary_f1, trimap_miou, iou per class, pixels
    metrics.md         the same as a table per split, best per column in bold
    panels-SPLIT.png   the split's largest region: the image, its labels, and each method's prediction

The labels of most splits are derived by a classical recipe (see the store's `recipe`); where the baseline is
that recipe itself (fluorescence nuclei) it scores near 1 by construction, and the human mask (dsb2018) is the
independent test.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from deepflows.arguments import positive_int
from deepflows.errors import UserError

log = logging.getLogger("deepflows.segment_eval")
BASELINE = "classical"


def model_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=MODEL_DIR")
    return name, path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="the task store (deepflows segment-data)")
    p.add_argument("--models", nargs="+", type=model_arg, required=True, metavar="NAME=DIR",
                   help="segment-train models, each with the name it gets in the tables")  # fmt: skip
    p.add_argument("--out", required=True, help="the output directory")
    p.add_argument("--tile", type=positive_int, default=512, help="tile side in pixels (default 512)")
    p.add_argument("--tolerance", type=float, default=2.0, help="boundary F1: match distance in px (default 2)")
    p.add_argument("--band", type=float, default=4.0, help="trimap mIoU: band around true boundaries in px")


def predictions(task, models: dict, tile: int) -> dict[str, dict[str, list[np.ndarray]]]:
    """split -> method -> the predicted classes of each of the split's regions."""
    from deepflows.imaging.segment.predict import Segmenter, load_segmentation_model
    from deepflows.imaging.segment.tasks import baseline

    segmenters = {}
    for name, path in models.items():
        model, meta = load_segmentation_model(path, task.name)
        segmenters[name] = Segmenter(model, meta["classes"], tile=tile)
    out = {}
    for split in task.splits("test"):
        images = [np.asarray(r.image) for r in task.regions(split)]
        out[split] = {BASELINE: [baseline(task.name, image) for image in images]}
        for name, segmenter in segmenters.items():
            out[split][name] = [segmenter.probabilities(image).argmax(-1).astype(np.uint8) for image in images]
    return out


def score(task, predicted: dict, tolerance: float, band: float) -> list[dict]:
    from deepflows.imaging.segment.metrics import score_regions

    rows = []
    for split, methods in predicted.items():
        truths = [np.asarray(r.mask) for r in task.regions(split)]
        for method, masks in methods.items():
            s = score_regions(list(zip(masks, truths)), len(task.classes), tolerance=tolerance, band=band)
            row = {"task": task.name, "split": split, "method": method, "miou": s["miou"],
                   "boundary_f1": s["boundary_f1"], "trimap_miou": s["trimap_miou"]}  # fmt: skip
            row.update({f"iou {c}": iou for c, iou in zip(task.classes, s["iou"])})
            rows.append({**row, "pixels": s["pixels"]})
    return rows


def markdown(rows: list[dict]) -> str:
    """One table per split; the best value of each metric in bold."""
    metrics = [k for k in rows[0] if k not in ("task", "split", "method", "pixels")]
    lines = []
    for split in dict.fromkeys(r["split"] for r in rows):
        part = [r for r in rows if r["split"] == split]
        best = {m: max(r[m] for r in part) for m in metrics}
        lines += [f"**{part[0]['task']}, {split}** ({part[0]['pixels']:,} px)", "",
                  "| method | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]  # fmt: skip
        for r in part:
            cells = [f"**{r[m]:.4f}**" if r[m] == best[m] else f"{r[m]:.4f}" for m in metrics]
            lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_panels(task, split: str, methods: dict, out: Path) -> None:
    """The split's largest region: its image, labels and each method's classes, with a legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from deepflows.imaging.segment.cli import display_image
    from deepflows.outputs import save_figure

    regions = task.regions(split)
    k = int(np.argmax([r.mask.size for r in regions]))
    picture = display_image(np.asarray(regions[k].image))
    colours = ["#000000", "#33dd33", "#dd33dd", "#33aaff"][: len(task.classes)]
    cmap = ListedColormap(colours)
    panels = [("image", None), ("labels", np.asarray(regions[k].mask))] + [(m, v[k]) for m, v in methods.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, mask) in zip(axes[0], panels):
        ax.imshow(picture)
        if mask is not None:
            ax.imshow(mask, cmap=cmap, vmin=0, vmax=len(colours) - 1, alpha=0.45, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.legend(handles=[Patch(color=c, label=n) for c, n in zip(colours, task.classes)], loc="lower center",
               ncol=len(colours), frameon=False)  # fmt: skip
    fig.suptitle(f"{task.name}, {split} split ({regions[k].source}, {regions[k].mask.shape[1]}x"
                 f"{regions[k].mask.shape[0]} px): labels and predictions")  # fmt: skip
    fig.tight_layout(rect=(0, 0.07, 1, 0.93))
    save_figure(fig, out, 110)
    plt.close(fig)


def run(args: argparse.Namespace) -> None:
    from deepflows.imaging.segment.tasks import open_task
    from deepflows.outputs import output_directory, write_text
    from deepflows.tables import write_tsv

    task = open_task(args.task)
    models = dict(args.models)
    if BASELINE in models or len(models) != len(args.models):
        raise UserError(f"--models: names must be unique and not {BASELINE!r} (the baseline's)")
    predicted = predictions(task, models, args.tile)
    rows = score(task, predicted, args.tolerance, args.band)
    with output_directory(args.out, whole=True) as out:
        write_tsv(rows, list(rows[0]), out / "metrics.csv", delimiter=",")
        write_text(out / "metrics.md", markdown(rows))
        for split, methods in predicted.items():
            plot_panels(task, split, methods, out / f"panels-{split}.png")
        summary = {"task": task.name, "models": models, "tolerance": args.tolerance, "band": args.band, "rows": rows}
        write_text(out / "summary.json", json.dumps(summary, indent=1))
    log.info("%s", markdown(rows))
