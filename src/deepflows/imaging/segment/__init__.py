"""Semantic segmentation of microscope images (DeepLab-v3+, as for the Augmented Reality Microscope).

The subpackage holds the backbone (MobileNetV2 with its ImageNet weights, read from the PyTorch checkpoint
without torch: `mobilenet`, `torch_weights`), the DeepLab family of heads (`deeplab`: FCN, v3's ASPP and
v3+'s decoder), the label masks, the segmentation metrics, and training and prediction.
"""
