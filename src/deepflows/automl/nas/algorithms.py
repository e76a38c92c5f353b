"""The search algorithms of the architecture search, by name, over any space given as draw / mutate functions:
the tabular comparison (deepflows.automl.nas.comparison) and the live search (deepflows.automl.nas.live) build
their proposers here, so both run the same algorithms.

    aging       regularized evolution: tournament of `sample` out of `population`, the oldest dies
    non-aging   the same tournament, the worst dies
    random      random search
    reinforce   the LSTM controller trained by REINFORCE (the RL baseline of Real et al. 2019)
    pairwise    Large-Scale Evolution: `population` copies of a trivial seed, pairwise tournaments
"""

from __future__ import annotations

from collections.abc import Callable

ALGORITHMS = ("aging", "non-aging", "random", "reinforce", "pairwise")
SEEDED = ("aging", "non-aging", "pairwise")  # the algorithms with a population to seed


def make_proposer(algorithm: str, draw: Callable, mutate: Callable, trivial, population: int, sample: int,
                  controller: Callable):  # fmt: skip
    """The proposer (deepflows.automl.search.proposers) of `algorithm`; controller() builds the REINFORCE one
    (its settings and any reuse of compiled programs are the caller's)."""
    from deepflows.automl.search.proposers import Evolution, PairwiseEvolution, RandomSearch

    if algorithm in ("aging", "non-aging"):
        return Evolution(draw, mutate, population, sample, aging=algorithm == "aging")
    if algorithm == "random":
        return RandomSearch(draw)
    if algorithm == "pairwise":
        return PairwiseEvolution(trivial, mutate, population)
    if algorithm == "reinforce":
        return controller()
    raise ValueError(f"unknown algorithm {algorithm!r} (one of {', '.join(ALGORITHMS)})")
