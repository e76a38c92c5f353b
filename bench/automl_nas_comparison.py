#!/usr/bin/env python3
"""The controlled comparison of architecture search algorithms on tabular benchmarks (NAS-Bench-201, HPOLib):
`deepflows nas-compare` with the bench's default output folder; every option of that command is accepted.

    python bench/automl_nas_comparison.py [--runs 100] [--budget 300] [--tune-runs 30] [--hpolib-runs 100]
                                          [--out results/automl/nas/comparison]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT

from deepflows.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--out" not in args:
        args += ["--out", str(ROOT / "results" / "automl" / "nas" / "comparison")]
    raise SystemExit(main(["nas-compare", *args]))
