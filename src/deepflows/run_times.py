"""`deepflows run-times`: Snakemake `benchmark:` files -> one table of run times and memory per stage.

    deepflows run-times --out run_times.tsv make_examples=benchmarks/s/make_examples/a.tsv \\
        make_examples=benchmarks/s/make_examples/b.tsv call_variants=benchmarks/s/call_variants.tsv ...

Each STAGE=TSV names one job's benchmark file; a stage's jobs are summed (wall and CPU seconds) and their
largest peak RSS kept. Stages keep the order they are first named in.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from deepflows.errors import UserError
from deepflows.inputs import require_file
from deepflows.outputs import check_new_output
from deepflows.tables import write_tsv

COLUMNS = ("stage", "jobs", "wall_s_sum", "wall_s_max", "cpu_s_sum", "peak_rss_mb_max")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("benchmarks", nargs="+", metavar="STAGE=TSV", help="a job's Snakemake benchmark file and its stage")
    p.add_argument("--out", required=True, metavar="TSV", help="one row per stage")


def run(args: argparse.Namespace) -> None:
    check_new_output(args.out)
    stages: dict[str, list[Path]] = {}
    for item in args.benchmarks:
        stage, sep, path = item.partition("=")
        if not sep or not stage:
            raise UserError(f"{item}: expected STAGE=TSV (a stage name, then its Snakemake benchmark file)")
        stages.setdefault(stage, []).append(require_file(path, f"benchmark file of stage {stage}"))
    rows = [{"stage": stage, **read_benchmarks(paths)} for stage, paths in stages.items()]
    write_tsv(rows, COLUMNS, args.out)


def read_benchmarks(paths: list[Path]) -> dict:
    """Sum and max over the jobs of one stage (Snakemake's columns `s`, `cpu_time`, `max_rss`)."""
    rows = []  # (path, line, row)
    for path in sorted(paths):
        with open(path) as handle:
            table = csv.DictReader(handle, delimiter="\t")
            if "s" not in (table.fieldnames or ()):
                raise UserError(f"{path}: not a Snakemake benchmark file (no column 's' in its header)")
            rows.extend((path, line, row) for line, row in enumerate(table, start=2))
    if not rows:
        return {"jobs": 0}

    def values(key):
        found = []
        for path, line, row in rows:
            if row.get(key) not in (None, "", "NA", "-"):
                try:
                    found.append(float(row[key]))
                except ValueError:
                    raise UserError(f"{path}: line {line}: {key} {row[key]!r} is not a number") from None
        return found

    wall, cpu, rss = values("s"), values("cpu_time"), values("max_rss")
    return {
        "jobs": len(rows),
        "wall_s_sum": round(sum(wall), 1),
        "wall_s_max": round(max(wall), 1),
        "cpu_s_sum": round(sum(cpu), 1) if cpu else None,
        "peak_rss_mb_max": round(max(rss), 1) if rss else None,
    }
