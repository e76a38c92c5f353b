#!/usr/bin/env python3
"""In Silico Labeling: our predictions vs the baselines on the held-out quadrant (deepflows isl-evaluate).

    python bench/isl_eval.py --well WELL.ome.zarr --predictions PRED.ome.zarr [--ridge RIDGE.ome.zarr]
                             [--unet UNET.ome.zarr] [--baseline NAME=STORE ...] [--split test]
                             [--test-quadrant bottom-right] [--tune-band 96] [--out bench/out/isl_eval]

The stores are prediction stores of the same well (deepflows.imaging.isl.prediction_store): ours from
`deepflows isl-predict`, the ridge from `deepflows isl-ridge`, a U-Net's from its own isl-predict run. The
evaluation's folder (tables, summary.json, figures) goes to --out, replaced if there; prints Markdown:
Pearson r (and RMSE) per label and model, then the calibration and uncertainty figures of the models with
quantiles.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT

from deepflows.errors import UserError
from deepflows.imaging.isl.evaluate import baseline_arg, evaluate_stores


def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(summary: dict) -> str:
    models = list(summary["models"])
    where = f"{summary['test_quadrant']} quadrant" if summary["split"] == "test" else f"{summary['split']} split"
    lines = [f"Pearson r (RMSE) of the point prediction, {where}, {summary['pixels']:,} pixels:", "",
             "| label | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]  # fmt: skip
    for label, scores in summary["labels"].items():
        cells = [f"{_f(scores[m]['r'])} ({_f(scores[m]['rmse'], 4)})" for m in models]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    calibrated = [(label, m, s) for label, scores in summary["labels"].items() for m, s in scores.items()
                  if "coverage_q05_q95" in s or "spearman_entropy" in s]  # fmt: skip
    if calibrated:
        lines += ["", "Calibration (share of true pixels inside the interval, half a bin of tolerance) and Spearman "
                  "of MAE vs uncertainty decile:", "",
                  "| label | model | [q25, q75] (0.5) | [q05, q95] (0.9) | rho, q95 - q05 | rho, entropy |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for label, m, s in calibrated:
            lines.append(f"| {label} | {m} | {_f(s.get('coverage_q25_q75'))} | {_f(s.get('coverage_q05_q95'))} "
                         f"| {_f(s.get('spearman_width'), 2)} | {_f(s.get('spearman_entropy'), 2)} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--well", required=True, help="the well store (deepflows isl-ingest)")
    parser.add_argument("--predictions", required=True, help="our prediction store (deepflows isl-predict)")
    parser.add_argument("--ridge", help="the ridge baseline's store (deepflows isl-ridge)")
    parser.add_argument("--unet", help="a U-Net's prediction store")
    parser.add_argument("--baseline", type=baseline_arg, action="append", default=[], metavar="NAME=STORE")
    parser.add_argument("--split", default="test", choices=("train", "tune", "test"))
    parser.add_argument("--test-quadrant", default="bottom-right")
    parser.add_argument("--tune-band", type=int, default=96)
    parser.add_argument("--out", default=str(OUT / "isl_eval"))
    args = parser.parse_args(argv)
    baselines = [(n, p) for n, p in (("ridge", args.ridge), ("unet", args.unet)) if p] + args.baseline
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        summary = evaluate_stores(args.well, args.predictions, out, baselines, "ours", args.split,
                                  args.test_quadrant, args.tune_band)  # fmt: skip
    except UserError as err:
        raise SystemExit(f"isl_eval: {err}") from None
    print(markdown(summary))
    print(f"\n(tables, figures and summary.json in {out})")
    print(json.dumps(summary, indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
