"""Semantic segmentation (DeepLab-v3+): labels, metrics, tasks and models."""
