"""Proposers that need no learning: random search and evolution (regularized/aging, or tournament where the
worst dies). Both work on any candidate that is plain JSON data, given how to draw one at random and how to
mutate one: update rules here (token lists), architectures in the architecture search.

The search is synchronous in batches so that it gives the same answer twice whatever the number of workers:
`propose(n, rng)` returns n candidates from the current state, `observe(candidates, rewards)` takes their
rewards in proposal order. Regularized evolution (Real et al. 2019) in these terms: until the population is full
a proposal is random; then each proposal samples `sample` members, mutates the best of them, and each observed
child joins the population while the oldest member (aging) or the worst (no aging) leaves.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class RandomSearch:
    def __init__(self, draw: Callable):
        self.draw = draw

    def propose(self, n: int, rng: np.random.Generator) -> list:
        return [self.draw(rng) for _ in range(n)]

    def observe(self, candidates: list, rewards: list[float]) -> None:
        pass

    def state(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        pass


class Evolution:
    def __init__(self, draw: Callable, mutate: Callable, population: int, sample: int, aging: bool = True):
        self.draw, self.mutate = draw, mutate
        self.size, self.sample, self.aging = population, sample, aging
        self.members: list[dict] = []  # {"candidate", "reward"}, oldest first

    def propose(self, n: int, rng: np.random.Generator) -> list:
        proposals = []
        for _ in range(n):
            if len(self.members) + len(proposals) < self.size:
                proposals.append(self.draw(rng))
                continue
            # while the population fills, tournaments draw from the members there are (at least one)
            picks = rng.choice(len(self.members), size=min(self.sample, len(self.members)), replace=False)
            parent = max((self.members[i] for i in picks), key=lambda m: m["reward"])
            proposals.append(self.mutate(parent["candidate"], rng))
        return proposals

    def observe(self, candidates: list, rewards: list[float]) -> None:
        for candidate, reward in zip(candidates, rewards):
            self.members.append({"candidate": candidate, "reward": float(reward)})
            if len(self.members) > self.size:
                if self.aging:
                    self.members.pop(0)
                else:
                    self.members.pop(int(np.argmin([m["reward"] for m in self.members])))

    def state(self) -> dict:
        return {"members": self.members}

    def restore(self, state: dict) -> None:
        self.members = list(state["members"])
