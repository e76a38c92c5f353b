"""NAS-Bench-201's outer stack (Dong & Yang, ICLR 2020), scaled down for 28x28 digits on CPU, and the MNIST task
that trains it with any cell.

    stem 3x3 conv (C; stride 1, or 2 for CPU budgets) + BN -> N cells -> residual reduction (2C, stride 2)
    -> N cells -> reduction (4C) -> N cells -> BN-ReLU -> global average pool -> Linear(10)

All cells share one genotype. The genotype is not part of the network: it is a traced int array passed at call
time, and each edge picks its operation with a switch, so one compiled program trains every cell (in train_many
the cell is a `shared` array, unbatched across runs, so only the chosen branch runs). Every edge owns the
parameters of both convolutions whatever its operation: every cell has the same parameter tree, and a mutated
child can start from its parent's trained weights as they are.

Operations as NAS-Bench-201 defines them: nor_conv = ReLU-Conv-BN, avg_pool_3x3 = stride 1 (padding not counted),
skip_connect = identity, none = zeros; node j is the sum over its inputs. BatchNorm keeps running statistics (the
trainer carries them as non-Param state, and a weights file holds them beside the parameters); evaluation uses
them, as NAS-Bench-201's does.
"""

from __future__ import annotations

import functools

import numpy as np

from deepflows.automl.nas.cells import EDGES, NODES, OPS, live_edges, validate
from deepflows.automl.tasks.mnist import MnistTask


@functools.cache
def _cellnet_class():
    """The NNX classes, built on first use so that importing this module does not import JAX."""
    from flax import nnx

    class ReLUConvBN(nnx.Module):
        def __init__(self, cin: int, cout: int, kernel: int, stride: int, rngs):
            self.conv = nnx.Conv(cin, cout, (kernel, kernel), strides=stride, use_bias=False, rngs=rngs)
            self.bn = nnx.BatchNorm(cout, rngs=rngs)

        def __call__(self, x, train: bool):
            return self.bn(self.conv(nnx.relu(x)), use_running_average=not train)

    class Edge(nnx.Module):
        """One edge of the cell, owning both convolutions (attributes named as their operations)."""

        def __init__(self, channels: int, rngs):
            self.nor_conv_1x1 = ReLUConvBN(channels, channels, 1, 1, rngs)
            self.nor_conv_3x3 = ReLUConvBN(channels, channels, 3, 1, rngs)

        def __call__(self, x, op, train: bool):
            branches = {
                "none": lambda edge, x: x * 0.0,
                "skip_connect": lambda edge, x: x,
                "nor_conv_1x1": lambda edge, x: edge.nor_conv_1x1(x, train),
                "nor_conv_3x3": lambda edge, x: edge.nor_conv_3x3(x, train),
                "avg_pool_3x3": lambda edge, x: nnx.avg_pool(x, (3, 3), (1, 1), "SAME", count_include_pad=False),
            }
            return nnx.switch(op, [branches[name] for name in OPS], self, x)

    class Cell(nnx.Module):
        def __init__(self, channels: int, rngs):
            self.edges = nnx.List([Edge(channels, rngs) for _ in EDGES])

        def __call__(self, x, cell, train: bool):
            nodes = [x]
            for node in range(1, NODES):
                nodes.append(sum(self.edges[k](nodes[src], cell[k], train)
                                 for k, (to, src) in enumerate(EDGES) if to == node))  # fmt: skip
            return nodes[-1]

    class Reduction(nnx.Module):
        """NAS-Bench-201's residual reduction block: two 3x3 ReLU-Conv-BN (the first strided) plus a 2x2 average
        pool and 1x1 conv shortcut."""

        def __init__(self, cin: int, cout: int, rngs):
            self.conv_a = ReLUConvBN(cin, cout, 3, 2, rngs)
            self.conv_b = ReLUConvBN(cout, cout, 3, 1, rngs)
            self.shortcut = nnx.Conv(cin, cout, (1, 1), use_bias=False, rngs=rngs)

        def __call__(self, x, train: bool):
            short = self.shortcut(nnx.avg_pool(x, (2, 2), (2, 2), "SAME"))
            return short + self.conv_b(self.conv_a(x, train), train)

    class CellNet(nnx.Module):
        def __init__(self, channels: int, cells_per_stage: int, stem_stride: int, rngs):
            widths = [channels, 2 * channels, 4 * channels]
            self.stem = nnx.Conv(1, channels, (3, 3), strides=stem_stride, use_bias=False, rngs=rngs)
            self.stem_bn = nnx.BatchNorm(channels, rngs=rngs)
            self.cells = nnx.List([Cell(w, rngs) for w in widths for _ in range(cells_per_stage)])
            self.reductions = nnx.List([Reduction(a, b, rngs) for a, b in zip(widths, widths[1:])])
            self.last_bn = nnx.BatchNorm(widths[-1], rngs=rngs)
            self.out = nnx.Linear(widths[-1], 10, rngs=rngs)
            self.cells_per_stage = cells_per_stage

        def __call__(self, x, cell, train: bool = True):
            x = self.stem_bn(self.stem(x), use_running_average=not train)
            for i, module in enumerate(self.cells):
                if i and i % self.cells_per_stage == 0:
                    x = self.reductions[i // self.cells_per_stage - 1](x, train)
                x = module(x, cell, train)
            x = nnx.relu(self.last_bn(x, use_running_average=not train))
            return self.out(x.mean(axis=(1, 2)))

    return CellNet


def cellnet(rngs, channels: int = 8, cells_per_stage: int = 1, stem_stride: int = 1):
    """A fresh network; call it as net(images, cell, train=True) with cell an int array of len(EDGES).
    stem_stride 2 runs the cells at 14x14, 7x7 and 4x4 (a quarter of the cost; NAS-Bench-201's stem keeps the input
    resolution)."""
    return _cellnet_class()(channels, cells_per_stage, stem_stride, rngs)


def live_param_count(params, cell) -> int:
    """Parameters the cell's network uses: the fixed stack plus the convolutions of live conv edges (an edge's
    unused convolution, or a dead edge's, does not count). params: the network's nnx.Param state."""
    import jax
    from flax import nnx

    cell, live = validate(cell), live_edges(cell)
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(params))[0]:
        keys = [getattr(p, "key", getattr(p, "idx", None)) for p in path]
        if "edges" in keys:
            edge, op = keys[keys.index("edges") + 1], keys[keys.index("edges") + 2]
            if not (live[edge] and OPS[cell[edge]] == op):
                continue
        total += int(np.prod(leaf.shape))
    return total


class CellTask(MnistTask):
    """The CellNet on MNIST digits (MnistTask's splits and batches); train_many passes the cell as shared["cell"]
    through `bind`."""

    name = "mnist_cellnet"

    def __init__(self, path, *, batch_size: int = 32, channels: int = 8, cells_per_stage: int = 1,
                 stem_stride: int = 1, train_split: str = "train"):  # fmt: skip
        super().__init__(path, train_split=train_split, batch_size=batch_size)
        self.channels, self.cells_per_stage, self.stem_stride = channels, cells_per_stage, stem_stride

    def model(self, rngs):
        return cellnet(rngs, self.channels, self.cells_per_stage, self.stem_stride)

    def bind(self, model, shared):
        return functools.partial(model, cell=shared["cell"])

    def evaluate(self, model, split):
        images, labels = self._data[split]
        return (model(images, train=False).argmax(-1) == labels).mean()
