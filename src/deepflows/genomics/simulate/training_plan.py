"""The layout of a training-data run (config key `training_data`): training chunks, evaluation and tuning regions.

The training span (`regions`, default every contig) loses each evaluation region plus `eval_margin` bp on
both sides; every remaining stretch is cut into equal chunks of at most `chunk_size` bp. A chunk is
simulated on its own, and simulated reads never leave their region, so no training read comes within
`eval_margin` bp of an evaluation region. Tuning regions must lie inside the chunks.

Pure functions of the config and the contig lengths: rules/variants_train.smk calls them at parse time,
and the same plan is rebuilt byte for byte on every run.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

from deepflows.errors import UserError
from deepflows.genomics.io.regions import Interval, merge, parse_region, subtract


@dataclass(frozen=True)
class TrainingPlan:
    chunks: list[Interval]
    eval_regions: list[Interval]
    tune_regions: list[Interval]

    def chunk_seed(self, base: int, index: int) -> int:
        return base + index


def reference_lengths(config: dict) -> dict[str, int]:
    """Contig lengths of the configured reference: the demo contig, or the .fai beside `reference.fasta`."""
    fasta = config["reference"]["fasta"]
    if fasta is None:
        demo = config["reference"]["demo"]
        return {demo["contig"]: demo["length"]}
    fai = Path(f"{fasta}.fai")
    if not fai.is_file():
        raise UserError(f"{fai}: FASTA index not found (training_data needs the contig lengths; run samtools faidx)")
    lengths = {}
    for number, line in enumerate(fai.read_text().splitlines(), 1):
        fields = line.split("\t")
        try:
            lengths[fields[0]] = int(fields[1])
        except (IndexError, ValueError):
            raise UserError(f"{fai}:{number}: not a FASTA index line") from None
    if not lengths:
        raise UserError(f"{fai}: FASTA index is empty")
    return lengths


def _parse_all(key: str, specs: list[str], lengths: dict[str, int]) -> list[Interval]:
    intervals = []
    for spec in specs:
        try:
            intervals.append(parse_region(spec, lengths))
        except UserError as err:
            raise UserError(f"training_data.{key}: {err}") from None
    return intervals


def split_evenly(interval: Interval, max_length: int) -> list[Interval]:
    """`interval` cut into the fewest equal pieces (within 1 bp) of at most `max_length` bp."""
    count = max(1, math.ceil(interval.length / max_length))
    cuts = [interval.start + interval.length * i // count for i in range(count + 1)]
    return [Interval(interval.contig, a, b) for a, b in itertools.pairwise(cuts)]


def plan_training(td: dict, lengths: dict[str, int]) -> TrainingPlan:
    """Chunks, evaluation and tuning regions of the `training_data` config section."""
    order = list(lengths)
    span = merge(_parse_all("regions", td["regions"], lengths), order) if td["regions"] else [
        Interval(c, 0, n) for c, n in lengths.items()
    ]
    evals = merge(_parse_all("eval_regions", td["eval_regions"], lengths), order)
    margin = td["eval_margin"]
    guarded = [Interval(e.contig, max(0, e.start - margin), min(lengths[e.contig], e.end + margin)) for e in evals]
    kept = subtract(span, merge(guarded, order))
    chunks = [piece for stretch in kept for piece in split_evenly(stretch, td["chunk_size"])]
    if not chunks:
        raise UserError("training_data: nothing left to train on once the evaluation regions are cut out")
    tunes = merge(_parse_all("tune_regions", td["tune_regions"], lengths), order)
    for tune in tunes:
        if subtract([tune], chunks):
            raise UserError(
                f"training_data.tune_regions: {tune} is not inside the training span (minus the evaluation "
                f"regions and {margin} bp around them)"
            )
    return TrainingPlan(chunks=chunks, eval_regions=evals, tune_regions=tunes)
