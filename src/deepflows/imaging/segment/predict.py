"""Prediction with a trained segmentation model: whole images of any size, tile by tile.

`Segmenter(model, classes, tile, context)` predicts class probabilities for a scaled image [H, W, C]: the image is
cut into tile x tile blocks (Dask), each read with `context` pixels around it (mirrored at the image's edges),
padded to a fixed shape (two compilations at most), predicted, and only its centre kept, so tiles join
without seams. `predict` takes an image in one piece (one compilation per image size: the AR microscope's
frames). `load_segmenter(model_dir)` is the AR microscope's model: RGB frame -> probability of the
target class, at a reduced inference size for speed.
"""

from __future__ import annotations

import numpy as np

from deepflows.errors import UserError
from deepflows.imaging.tiles import padded_side

CONTEXT = 32  # pixels of context around a tile: DeepLab's receptive field is wider, but 32 px hides the seams


class Segmenter:
    """A model (eval mode) as a function of scaled images [H, W, C] -> class probabilities [H, W, classes].

    Also deepflows.imaging.tiles.predict_lazily's block function (`margin`, `channels()`, and a call on a block
    [h, w, C] with the margin around it -> the probabilities of its centre), so an image of any size is predicted
    with Dask, a few tiles in memory at a time."""

    def __init__(self, model, classes: list[str], tile: int | None = 512, context: int = CONTEXT):
        import jax
        from flax import nnx

        model.eval()
        # a pure function of the weights: threads (Dask, the AR loop) may call it at once; NNX modules are not
        # thread-safe
        graphdef, self.state = nnx.split(model)
        self.forward = jax.jit(lambda state, x: jax.nn.softmax(nnx.merge(graphdef, state)(x), axis=-1))
        self.classes, self.tile, self.margin = list(classes), tile, context

    def channels(self) -> list[str]:
        return self.classes

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Probabilities of a whole image in one piece (one compilation per image size)."""
        return np.asarray(self.forward(self.state, np.asarray(image, np.float32)[None])[0])

    def __call__(self, block: np.ndarray) -> np.ndarray:
        h, w, _ = block.shape
        side = padded_side(h, w, self.tile, self.margin)  # one of two compiled shapes
        padded = np.pad(block, ((0, side - h), (0, side - w), (0, 0)), mode="reflect")
        return self.predict(padded)[self.margin : h - self.margin, self.margin : w - self.margin]

    def lazy(self, image):
        """Dask [H, W, C] scaled -> lazy probabilities [classes, H, W]."""
        import dask.array as da

        from deepflows.imaging.tiles import predict_lazily

        return predict_lazily(da.moveaxis(image, -1, 0), self, self.tile)

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Probabilities [H, W, classes] of a scaled image in memory: tile by tile (or whole, tile None)."""
        import dask.array as da

        if self.tile is None or max(image.shape[:2]) <= self.tile:
            return self.predict(image)
        lazy = self.lazy(da.from_array(np.asarray(image, np.float32), chunks=(self.tile, self.tile, -1)))
        return np.moveaxis(lazy.compute(scheduler="sync"), 0, -1)


def load_segmentation_model(path, task: str | None = None):
    """(model, meta) of a segment-train model directory; another kind of model (with `task`: a model of another
    task) is refused with one line."""
    from deepflows.nn.model_dir import load_model

    model, meta = load_model(path)
    if task is not None and (meta.get("name") != "segmentation" or meta.get("task") != task):
        raise UserError(f"{path}: not a segmentation model of task {task} (its task: {meta.get('task')})")
    if meta.get("name") != "segmentation":
        raise UserError(f"{path}: not a segmentation model (model.json name {meta.get('name')!r})")
    return model, meta


def target_index(classes: list[str], target: str | None, what: str) -> int:
    """The index of class `target` (None: the last class, the one the AR microscope outlines); `what` names the
    setting in the error."""
    if target is None:
        return len(classes) - 1
    if target not in classes:
        raise UserError(f"{what}: the model's classes are {', '.join(classes)}")
    return classes.index(target)


def load_segmenter(model_dir, target: str | None = None, inference_size: tuple[int, int] | None = (320, 240)):
    """The AR microscope's model: a function of an RGB frame uint8 [H, W, 3] -> float32 [H, W], the probability
    of the `target` class (default: the model's last class, e.g. haematoxylin-dense), predicted on the frame
    resized to `inference_size` (width, height; None: full size) and resized back."""
    import cv2

    from deepflows.imaging.segment.inputs import normalise_input

    model, meta = load_segmentation_model(model_dir)
    if meta["input_shape"][-1] != 3:
        raise UserError(f"{model_dir}: the model reads {meta['input_shape'][-1]} channels; frames are RGB")
    classes = list(meta["classes"])
    index = target_index(classes, target, f"target class {target!r}")
    segmenter, spec = Segmenter(model, classes, tile=None), meta["input_normalization"]

    def segment(frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        small = frame if inference_size is None else cv2.resize(frame, inference_size, interpolation=cv2.INTER_AREA)
        probability = segmenter.predict(normalise_input(small, spec))[..., index]
        return cv2.resize(probability, (w, h), interpolation=cv2.INTER_LINEAR) if small is not frame else probability

    return segment
