"""What the image-classification tasks share (the trainer's task contract): labelled images in memory per split,
random training batches, cross-entropy, and accuracy on a split."""

from __future__ import annotations

import math


class ImageClassification:
    metric = "accuracy"
    higher_is_better = True
    chance_loss = math.log(10)
    train_split = "train"
    batch_size = 32

    def _keep(self, images, labels, rows: dict) -> None:
        """Hold each split's images and labels (rows: split -> row indices) as device arrays."""
        import jax.numpy as jnp

        self.sizes = {name: len(idx) for name, idx in rows.items()}
        self._data = {name: (jnp.asarray(images[idx]), jnp.asarray(labels[idx])) for name, idx in rows.items()}

    def batch(self, key):
        import jax

        images, labels = self._data[self.train_split]
        idx = jax.random.randint(key, (self.batch_size,), 0, len(labels))
        return images[idx], labels[idx]

    def loss(self, model, batch, key):
        import optax

        images, labels = batch
        return optax.softmax_cross_entropy_with_integer_labels(model(images), labels).mean()

    def evaluate(self, model, split):
        images, labels = self._data[split]
        return (model(images).argmax(-1) == labels).mean()
