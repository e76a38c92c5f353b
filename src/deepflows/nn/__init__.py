"""Flax NNX models, training loop, optimizers and model directories."""
