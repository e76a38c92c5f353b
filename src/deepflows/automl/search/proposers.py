"""Proposers that need no learning: random search and evolution (regularized/aging, or tournament where the
worst dies). Both work on any candidate that is plain JSON data, given how to draw one at random and how to
mutate one: update rules here (token lists), architectures in the architecture search.

The search is synchronous in batches so that it gives the same answer twice whatever the number of workers:
`propose(n, rng)` returns n candidates from the current state, `observe(candidates, rewards)` takes their
rewards in proposal order. Regularized evolution (Real et al. 2019) in these terms: until the population is full
a proposal is random; then each proposal samples `sample` members, mutates the best of them, and each observed
child joins the population while the oldest member (aging) or the worst (no aging) leaves. Large-Scale Evolution
(Real et al. 2017) in these terms: the population starts as copies of one trivial seed; each proposal picks two
members at random, the worse dies at once and the better's mutated copy is the proposal.

Members are {"candidate", "reward"} plus whatever the caller adds (the architecture search adds the model's id).
`propose_with_parents` also says which member each proposal was mutated from (None: drawn at random), so a child
can inherit its parent's trained weights.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class RandomSearch:
    def __init__(self, draw: Callable):
        self.draw = draw

    def propose(self, n: int, rng: np.random.Generator) -> list:
        return [self.draw(rng) for _ in range(n)]

    def propose_with_parents(self, n: int, rng: np.random.Generator) -> list[tuple]:
        return [(candidate, None) for candidate in self.propose(n, rng)]

    def observe(self, candidates: list, rewards: list[float], extras: list[dict] | None = None) -> None:
        pass

    def state(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        pass


class Evolution:
    def __init__(self, draw: Callable, mutate: Callable, population: int, sample: int, aging: bool = True):
        self.draw, self.mutate = draw, mutate
        self.size, self.sample, self.aging = population, sample, aging
        self.members: list[dict] = []  # {"candidate", "reward", ...}, oldest first

    def propose(self, n: int, rng: np.random.Generator) -> list:
        return [candidate for candidate, _ in self.propose_with_parents(n, rng)]

    def propose_with_parents(self, n: int, rng: np.random.Generator) -> list[tuple]:
        proposals = []
        for _ in range(n):
            if len(self.members) + len(proposals) < self.size:
                proposals.append((self.draw(rng), None))
                continue
            # while the population fills, tournaments draw from the members there are (at least one)
            picks = rng.choice(len(self.members), size=min(self.sample, len(self.members)), replace=False)
            parent = max((self.members[i] for i in picks), key=lambda m: m["reward"])
            proposals.append((self.mutate(parent["candidate"], rng), parent))
        return proposals

    def observe(self, candidates: list, rewards: list[float], extras: list[dict] | None = None) -> None:
        for i, (candidate, reward) in enumerate(zip(candidates, rewards)):
            self.members.append({**(extras[i] if extras else {}), "candidate": candidate, "reward": float(reward)})
            if len(self.members) > self.size:
                if self.aging:
                    self.members.pop(0)
                else:
                    self.members.pop(int(np.argmin([m["reward"] for m in self.members])))

    def state(self) -> dict:
        return {"members": self.members}

    def restore(self, state: dict) -> None:
        self.members = list(state["members"])


class PairwiseEvolution(Evolution):
    """Large-Scale Evolution's loop: `population` copies of `seed` (each evaluated: training is noisy), then
    pairwise tournaments in which the worse of two random members dies and the better's mutant is proposed."""

    def __init__(self, seed_candidate, mutate: Callable, population: int):
        super().__init__(lambda rng: list(seed_candidate), mutate, population, sample=2, aging=False)
        self.seeded = 0  # seeds proposed so far: tournaments shrink the population, so its size cannot tell

    def propose_with_parents(self, n: int, rng: np.random.Generator) -> list[tuple]:
        proposals = []
        for _ in range(n):
            if self.seeded < self.size or len(self.members) < 2:
                self.seeded += 1
                proposals.append((self.draw(rng), None))
                continue
            a, b = rng.choice(len(self.members), size=2, replace=False)
            better, worse = (a, b) if self.members[a]["reward"] >= self.members[b]["reward"] else (b, a)
            parent = self.members[better]
            del self.members[worse]
            proposals.append((self.mutate(parent["candidate"], rng), parent))
        return proposals

    def observe(self, candidates: list, rewards: list[float], extras: list[dict] | None = None) -> None:
        for i, (candidate, reward) in enumerate(zip(candidates, rewards)):
            self.members.append({**(extras[i] if extras else {}), "candidate": candidate, "reward": float(reward)})

    def state(self) -> dict:
        return {"members": self.members, "seeded": self.seeded}

    def restore(self, state: dict) -> None:
        self.members, self.seeded = list(state["members"]), state["seeded"]
