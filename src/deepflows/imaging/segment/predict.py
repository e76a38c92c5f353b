"""Prediction with a trained segmentation model: whole images of any size, tile by tile.

`Segmenter(model, tile, context)` predicts class probabilities for a normalised image [H, W, C]: the image is
cut into tile x tile blocks, each read with `context` pixels around it (mirrored at the image's edges), padded
to one fixed shape (one compilation for every tile), predicted, and only its centre kept, so tiles join
without seams. `tile=None` predicts the image in one piece (one compilation per image size: the AR
microscope's frames). `load_segmenter(model_dir)` is the AR microscope's model: RGB frame -> probability of the
target class, at a reduced inference size for speed.
"""

from __future__ import annotations

import numpy as np

from deepflows.errors import UserError

CONTEXT = 32  # pixels of context around a tile: DeepLab's receptive field is wider, but 32 px hides the seams


class Segmenter:
    """A model (eval mode) as a function of normalised images [H, W, C] -> probabilities [H, W, classes]."""

    def __init__(self, model, tile: int | None = 512, context: int = CONTEXT):
        import jax
        from flax import nnx

        model.eval()
        # a pure function of the weights: threads (Dask, the AR loop) may call it at once; NNX modules are not
        # thread-safe
        graphdef, self.state = nnx.split(model)
        self.forward = jax.jit(lambda state, x: jax.nn.softmax(nnx.merge(graphdef, state)(x), axis=-1))
        self.tile, self.context = tile, context

    def _predict(self, block: np.ndarray) -> np.ndarray:
        return np.asarray(self.forward(self.state, block[None].astype(np.float32))[0])

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, np.float32)
        h, w = image.shape[:2]
        if self.tile is None:
            return self._predict(image)
        t, c = self.tile, self.context
        rows, cols = -(-h // t), -(-w // t)
        # mirrored context around the image, then zeros up to whole tiles (never seen: their outputs are cut off)
        mode = "reflect" if min(h, w) > c else "edge"
        padded = np.pad(image, ((c, c), (c, c), (0, 0)), mode=mode)
        padded = np.pad(padded, ((0, rows * t - h), (0, cols * t - w), (0, 0)))
        out = None
        for r in range(rows):
            for q in range(cols):
                block = padded[r * t : r * t + t + 2 * c, q * t : q * t + t + 2 * c]
                probs = self._predict(block)[c : c + t, c : c + t]
                if out is None:
                    out = np.empty((rows * t, cols * t, probs.shape[-1]), np.float32)
                out[r * t : (r + 1) * t, q * t : (q + 1) * t] = probs
        return out[:h, :w]


def load_segmenter(model_dir, target: str | None = None, inference_size: tuple[int, int] | None = (320, 240)):
    """The AR microscope's model: a function of an RGB frame uint8 [H, W, 3] -> float32 [H, W], the probability
    of the `target` class (default: the model's last class, e.g. haematoxylin-dense), predicted on the frame
    resized to `inference_size` (width, height; None: full size) and resized back."""
    import cv2

    from deepflows.imaging.segment.tasks import normalise_input
    from deepflows.nn.model_dir import load_model

    model, meta = load_model(model_dir)
    if meta.get("name") != "segmentation":
        raise UserError(f"{model_dir}: not a segmentation model (model.json name {meta.get('name')!r})")
    if meta["input_shape"][-1] != 3:
        raise UserError(f"{model_dir}: the model reads {meta['input_shape'][-1]} channels; frames are RGB")
    classes = list(meta["classes"])
    if target is not None and target not in classes:
        raise UserError(f"target class {target!r}: the model's classes are {', '.join(classes)}")
    index = classes.index(target) if target is not None else len(classes) - 1
    segmenter, spec = Segmenter(model, tile=None), meta["input_normalization"]

    def segment(frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        small = frame if inference_size is None else cv2.resize(frame, inference_size, interpolation=cv2.INTER_AREA)
        probability = segmenter.probabilities(normalise_input(small, spec))[..., index]
        return cv2.resize(probability, (w, h), interpolation=cv2.INTER_LINEAR) if small is not frame else probability

    return segment
