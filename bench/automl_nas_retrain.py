#!/usr/bin/env python3
"""Cells of the architecture search retrained on the full budget: each cell (NAS-Bench-201 text; default: the
hand-designed ResNet cell, TRIVIAL and two random cells) trained from scratch on the 4,000 train digits with
--seeds seeds side by side, for --scale times the search child's steps, scored on the 1,000 validation digits
(which no search scores). The table is the one `deepflows nas-report` writes for the searches' winners.

    python bench/automl_nas_retrain.py [--cell TEXT ...] [--seeds 5] [--scale 4] [--out results/automl/nas/retrain]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT

from deepflows.automl.nas import cells
from deepflows.automl.nas.report import retrain_markdown, retrain_table
from deepflows.automl.nas.settings import load_settings
from deepflows.errors import UserError

DATA = ROOT.parent / "shared" / "data" / "automl" / "mnist_5k.csv.gz"


def default_cells() -> list[tuple[str, list[int]]]:
    rng = np.random.default_rng(0)
    named = [("hand-designed (ResNet)", list(cells.HAND_DESIGNED)), ("trivial (identity)", list(cells.TRIVIAL))]
    return named + [(f"random {i + 1}", cells.sample(rng)) for i in range(2)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", action="append", default=[], help="a cell's NAS-Bench-201 text (repeatable)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=4.0, help="retrain steps: this times the search child's")
    parser.add_argument("--settings", default=str(ROOT / "config" / "automl" / "nas.yaml"))
    parser.add_argument("--out", default=str(ROOT / "results" / "automl" / "nas" / "retrain"))
    args = parser.parse_args(argv)
    child = load_settings(args.settings)["child"]
    try:
        named = [(text, list(cells.parse(text))) for text in args.cell] or default_cells()
    except UserError as error:
        parser.error(str(error))
    steps = max(1, round(child["steps"] * args.scale / child["check_every"])) * child["check_every"]
    seeds = list(range(args.seeds))
    text = retrain_markdown(retrain_table(named, child, seeds, steps), seeds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text)
    print(text)
    print(f"wrote {out}/table.md (seconds: the seeds side by side, compilation included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
