#!/usr/bin/env python3
"""GQ calibration of our calls on the simulated evaluation set (deepflows.genomics.benchmark.gq_calibration).

    python bench/gq_calibration.py        # the sim-eval calls bench/peers.py wrote
    python bench/gq_calibration.py --calls VCF --truth VCF --confident BED --ref FASTA
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchlib import DATA, OUT, ROOT

from deepflows.genomics.benchmark.gq_calibration import calibration, markdown, plot

EVAL = ROOT / "results" / "hg002-grch38" / "eval" / "standard"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default=str(OUT / "peers" / "sim-eval" / "deepflows.vcf.gz"))
    parser.add_argument("--truth", default=str(EVAL / "reads.truth.vcf.gz"))
    parser.add_argument("--confident", default=str(EVAL / "reads.confident.bed"))
    parser.add_argument("--ref", default=str(DATA / "grch38.chr20_and_21_10M.fa.gz"))
    parser.add_argument("--json", default=str(OUT / "gq_calibration.json"))
    args = parser.parse_args()
    for path in (args.calls, args.truth, args.confident, args.ref):
        if not Path(path).exists():
            raise SystemExit(f"{path}: not found (run bench/peers.py --cases sim-eval first for the default calls)")
    rows = calibration(args.calls, args.truth, args.confident, args.ref)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, str(Path(args.json).with_suffix(".png")))
    print(markdown(rows))
    print(f"\n(calls: {args.calls}; truth: {args.truth}; JSON and plot: {args.json}, .png)")


if __name__ == "__main__":
    main()
