"""sklearn's digits (1,797 8x8 images, 16 grey levels) and a small residual network: a transfer task of the
optimizer benchmark.

Splits, stratified and fixed by seed 0: train 70% (what runs train on), tune 15% (learning rates are picked on it),
test 15% (what is reported).
"""

from __future__ import annotations

from deepflows.automl.tasks.classify import ImageClassification
from deepflows.automl.tasks.mnist import split_indices

SPLITS = {"train": 0.7, "tune": 0.15, "test": 0.15}


class ResNet:
    """A 3x3 stem convolution at 8x8, a strided 3x3 convolution to 4x4 (cheap on CPUs), `blocks` residual blocks
    (two 3x3 convolutions, ReLU), global average pooling and a linear read-out: ~12k parameters at width 16 and
    2 blocks."""

    def __new__(cls, rngs, width: int = 16, blocks: int = 2):
        from flax import nnx

        class _Block(nnx.Module):
            def __init__(self, rngs):
                self.conv1 = nnx.Conv(width, width, (3, 3), rngs=rngs)
                self.conv2 = nnx.Conv(width, width, (3, 3), rngs=rngs)

            def __call__(self, x):
                return nnx.relu(x + self.conv2(nnx.relu(self.conv1(x))))

        class _ResNet(nnx.Module):
            def __init__(self, rngs):
                self.stem = nnx.Conv(1, width, (3, 3), rngs=rngs)
                self.down = nnx.Conv(width, width, (3, 3), strides=2, rngs=rngs)
                self.blocks = nnx.List([_Block(rngs) for _ in range(blocks)])
                self.out = nnx.Linear(width, 10, rngs=rngs)

            def __call__(self, x):
                x = nnx.relu(self.down(nnx.relu(self.stem(x))))
                for block in self.blocks:
                    x = block(x)
                return self.out(x.mean(axis=(1, 2)))

        return _ResNet(rngs)


class DigitsTask(ImageClassification):
    """The residual network on sklearn's digits: train on `train`, accuracy on `tune` or `test`."""

    name = "digits_resnet"

    def __init__(self, *, batch_size: int = 32, width: int = 16, blocks: int = 2):
        import numpy as np
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = (digits.images / 16.0).astype(np.float32)[..., None]
        labels = digits.target.astype(np.int32)
        rows = split_indices(labels, SPLITS)
        self._keep(images, labels, rows)
        self.batch_size, self.width, self.blocks = batch_size, width, blocks

    def model(self, rngs):
        return ResNet(rngs, self.width, self.blocks)
