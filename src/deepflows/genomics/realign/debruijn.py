"""Candidate haplotypes of one active window, assembled from a de Bruijn graph of reference and read k-mers.

As in DeepVariant: k grows from `min_k` until the window's reference has no repeated k-mer and the
pruned graph has no cycle; read edges seen in fewer than `min_edge_reads` reads are pruned (reference
edges are always kept); only nodes on some path from the reference's first k-mer to its last remain;
paths are ranked by their log-likelihood (sum over edges of log(edge reads / reads leaving the node))
and the best `max_haplotypes` are kept, the reference always among them.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AssemblyParams:
    min_k: int = 10
    max_k: int = 101
    min_edge_reads: int = 2
    min_base_quality: int = 10
    max_haplotypes: int = 16
    # Reference edges with no read support still need a weight for path ranking.
    reference_pseudocount: float = 0.1


@dataclass(frozen=True)
class Assembly:
    start: int  # the haplotypes replace ref_text[start:end]
    end: int
    haplotypes: list[str]  # the reference first


def assemble(ref_text: str, core: tuple[int, int], reads: list[tuple[str, np.ndarray]],
             params: AssemblyParams) -> Assembly:  # fmt: skip
    """Haplotypes of the active window ref_text[core[0]:core[1]] supported by `reads` ((letters, base
    qualities) pairs): the reference first, then alternatives by decreasing likelihood.

    For each k the graph spans the window plus k bases of `ref_text` on each side (as far as it goes),
    so that the first and last k-mers, where every path must start and end, hold no variant of the window.
    Only the reference when no k works.
    """
    segments = [seg for text, qual in reads for seg in _usable_segments(text, qual, params.min_base_quality)]
    for k in range(params.min_k, params.max_k + 1):
        start, end = max(core[0] - k, 0), min(core[1] + k, len(ref_text))
        ref_window = ref_text[start:end]
        if len(ref_window) <= k:
            break
        ref_kmers = [ref_window[i : i + k] for i in range(len(ref_window) - k + 1)]
        if len(set(ref_kmers)) != len(ref_kmers):
            continue  # a repeat longer than k: paths through it would be ambiguous
        graph = _Graph.build(ref_kmers, segments, k, params)
        order = graph.topological_order()
        if order is None:
            continue  # a cycle: the reads carry a repeat longer than k
        haplotypes = [ref_window]
        for path in graph.best_paths(order, params.max_haplotypes):
            text = path[0] + "".join(kmer[-1] for kmer in path[1:])
            if text != ref_window:
                haplotypes.append(text)
        return Assembly(start, end, haplotypes[: params.max_haplotypes])
    return Assembly(core[0], core[1], [ref_text[core[0] : core[1]]])


def _usable_segments(text: str, qual: np.ndarray, min_base_quality: int) -> list[str]:
    """The read split at N and low-quality bases: k-mers never span an unreliable base."""
    bad = (qual < min_base_quality) | (np.frombuffer(text.encode("ascii"), dtype=np.uint8) == ord("N"))
    if not bad.any():
        return [text]
    cuts = np.flatnonzero(bad)
    bounds = zip(np.concatenate([[0], cuts + 1]), np.concatenate([cuts, [len(text)]]))
    return [text[a:b] for a, b in bounds if b > a]


class _Graph:
    def __init__(self, source: str, sink: str, edges: dict[tuple[str, str], float]):
        self.source, self.sink = source, sink
        self.successors: dict[str, list[str]] = {}
        self.weight = edges
        for u, v in sorted(edges):
            self.successors.setdefault(u, []).append(v)

    @classmethod
    def build(cls, ref_kmers: list[str], segments: list[str], k: int, params: AssemblyParams) -> _Graph:
        # An edge is a (k+1)-mer; a read supports it once, however often it repeats it.
        reads_per_edge: Counter[str] = Counter()
        for segment in segments:
            reads_per_edge.update({segment[i : i + k + 1] for i in range(len(segment) - k)})
        edges = {(e[:-1], e[1:]): float(n) for e, n in reads_per_edge.items() if n >= params.min_edge_reads}
        for u, v in itertools.pairwise(ref_kmers):
            edges[(u, v)] = max(float(reads_per_edge[u + v[-1]]), params.reference_pseudocount)
        graph = cls(ref_kmers[0], ref_kmers[-1], edges)
        graph._keep_between_ends()
        return graph

    def _keep_between_ends(self) -> None:
        """Drop nodes not on some source -> sink path (dead ends and read k-mers outside the window)."""
        forward = _reachable(self.source, self.successors)
        predecessors: dict[str, list[str]] = {}
        for u, vs in self.successors.items():
            for v in vs:
                predecessors.setdefault(v, []).append(u)
        backward = _reachable(self.sink, predecessors)
        keep = forward & backward
        self.weight = {(u, v): w for (u, v), w in self.weight.items() if u in keep and v in keep}
        self.successors = {}
        for u, v in sorted(self.weight):
            self.successors.setdefault(u, []).append(v)
        self.successors.setdefault(self.source, [])

    def topological_order(self) -> list[str] | None:
        indegree: dict[str, int] = {u: 0 for u in self.successors}
        for vs in self.successors.values():
            for v in vs:
                indegree[v] = indegree.get(v, 0) + 1
        ready = sorted(u for u, d in indegree.items() if d == 0)
        order = []
        while ready:
            u = ready.pop()
            order.append(u)
            for v in self.successors.get(u, []):
                indegree[v] -= 1
                if indegree[v] == 0:
                    ready.append(v)
        return order if len(order) == len(indegree) else None

    def best_paths(self, order: list[str], n_best: int) -> list[list[str]]:
        """The n_best source -> sink paths by log-likelihood (exact: top-n lists carried in topological order)."""
        out_weight = {u: sum(self.weight[(u, v)] for v in vs) for u, vs in self.successors.items()}
        best: dict[str, list[tuple[float, tuple[str, ...]]]] = {self.source: [(0.0, (self.source,))]}
        for u in order:
            partial = best.pop(u, [])
            if u == self.sink:
                best[u] = partial
                break
            for v in self.successors.get(u, []):
                step = math.log(self.weight[(u, v)] / out_weight[u])
                extended = [(score + step, path + (v,)) for score, path in partial]
                merged = best.get(v, []) + extended
                # Highest likelihood first; equal scores by path text, so the choice is deterministic.
                best[v] = heapq.nsmallest(n_best, merged, key=lambda sp: (-sp[0], sp[1]))
        return [list(path) for _, path in best.get(self.sink, [])]


def _reachable(start: str, successors: dict[str, list[str]]) -> set[str]:
    seen, stack = {start}, [start]
    while stack:
        for v in successors.get(stack.pop(), []):
            if v not in seen:
                seen.add(v)
                stack.append(v)
    return seen
