"""`deepflows segment-train`: train a DeepLab model (FCN, v3 or v3+ head on MobileNetV2) on a segmentation task.

    deepflows segment-train --config config/model/segment_v3plus.yaml --task STORE.zarr --workdir runs/seg
                            --out resources/models/DIR [--head fcn|v3|v3plus] [--steps N] [--seed S]
                            [--init MODEL_DIR] [--stop-at N]

The task store (deepflows.imaging.segment.tasks, `deepflows segment-data`) holds normalised images and their
masks cut into train, tune and test regions. Each step draws `training.batch_size` crops of data.crop pixels
wholly inside train regions, then augments each (one of the 8 flips and quarter turns, contrast and brightness
jitter, and for colour images a small per-channel gain, as stains vary), a pure function of (seed, step).
The loss is the pixels' mean cross-entropy, weighted per class by data.class_weights (default all 1).

The backbone starts from MobileNetV2's ImageNet weights (backbone: imagenet; `none`: a random init, for the
ablation), unless `init` warm-starts the whole model from a trained one. Every evaluation.every steps the
model predicts each tune region whole (tiles of data.tile pixels with context, as `deepflows segment` does) and
is scored on it: the loss, pixel accuracy, mIoU and the boundary F1 score (deepflows.imaging.segment.metrics);
evaluation.select_by picks the exported step (mIoU by default). The test regions are never read here.

The loop (checkpoints, exact resume, the workdir lock, metrics.png, the float16 export) is deepflows.nn.loop's.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging

import numpy as np

from deepflows.errors import UserError
from deepflows.nn.loop import add_run_arguments
from deepflows.nn.task import Task

log = logging.getLogger("deepflows.segment_train")
BACKBONES = ("imagenet", "none")


@functools.cache
def schema() -> dict:
    from deepflows.imaging.segment.deeplab import HEADS
    from deepflows.nn.loop import config_schema

    data = {
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "properties": {
            "task": {"type": "string", "minLength": 1, "description": "the task store (deepflows segment-data)"},
            "crop": {"type": "integer", "minimum": 32, "multipleOf": 16, "default": 256,
                     "description": "side of the training crops in pixels (a multiple of 16)"},
            "tile": {"type": "integer", "minimum": 32, "multipleOf": 16, "default": 512,
                     "description": "side of the tiles the tune regions are predicted in"},
            "class_weights": {"type": ["array", "null"], "items": {"type": "number", "exclusiveMinimum": 0},
                              "default": None, "description": "the loss's weight of each class (null: all 1)"},
            "scales": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 4},
                       "minItems": 2, "maxItems": 2, "default": [1, 1],
                       "description": "[min, max] of the zoom each crop is drawn at (log-uniform): a crop of crop / "
                                      "zoom pixels resized to crop (below 1: the model also sees the tissue at "
                                      "lower magnifications, as the AR microscope's 4x-40x views show it)"},
            "jitter": {"type": "number", "minimum": 0, "maximum": 0.5, "default": 0.15,
                       "description": "contrast and brightness jitter: contrast x exp(U(-j, j)), brightness + "
                                      "U(-j, j) / 2; colour images also a per-channel gain of exp(U(-j, j) / 3)"},
        },
    }  # fmt: skip
    backbone = {"enum": list(BACKBONES), "default": "imagenet",
                "description": "the backbone's starting weights: MobileNetV2's ImageNet weights, or none (random)"}
    return config_schema(
        "deepflows segment-train config", ["deeplab"], ("miou", "loss", "boundary_f1"), training={},
        evaluation={}, sections={"data": data, "backbone": backbone},
        model_default={"architecture": "deeplab", "options": {"head": HEADS[-1]}},
        defaults={"training": {"batch_size": 8, "steps": 1500, "checkpoint_every": 100, "log_every": 25,
                               "keep_checkpoints": 2},
                  "evaluation": {"every": 100}, "schedule": {"learning_rate": 1e-3, "warmup_steps": 50}},
    )  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="YAML", help="the training config (see the module doc)")
    p.add_argument("--task", help="the task store (data.task)")
    p.add_argument("--head", help="model.options.head: fcn, v3 or v3plus")
    add_run_arguments(p)


def segment_config(args: argparse.Namespace) -> dict:
    from deepflows.nn.loop import load_config, override, read_raw_config

    raw = read_raw_config(args.config)
    if args.task:
        raw.setdefault("data", {})["task"] = args.task
    if args.head:
        model = raw.setdefault("model", {"architecture": "deeplab"})
        model.setdefault("options", {})["head"] = args.head
    cfg = load_config(raw, schema(), args.config)
    if "task" not in cfg["data"]:
        raise UserError("segment-train: no task store; give --task, or data.task in --config")
    return override(cfg, steps=args.steps, seed=args.seed, init=args.init)


def run(args: argparse.Namespace) -> None:
    from deepflows.nn.loop import fit
    from deepflows.nn.model_dir import publish_model

    summary = fit(SegmentTask(segment_config(args)), args.workdir, stop_at=args.stop_at,
                  command=getattr(args, "command_line", "deepflows segment-train"))  # fmt: skip
    if "model" in summary:
        publish_model(summary, args.out)
        log.info("best step %d -> %s in %.0f s", summary["best_step"], args.out, summary["wall_seconds"])


# ----------------------------------------------------------------------------- loss and augmentation


@dataclasses.dataclass(frozen=True)
class PixelLoss:
    """Mean weighted cross-entropy of logits [B, H, W, K] against masks [B, H, W]; aux: correct pixels."""

    class_weights: tuple[float, ...] | None = None

    def __call__(self, model, batch, constants):
        import jax
        import jax.numpy as jnp
        import optax

        x, y = batch
        logits = model(x)
        # with one-hot targets: the gradient of a gather by label is a scatter, slow on XLA's CPU backend
        ce = optax.softmax_cross_entropy(logits, jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype))
        if self.class_weights is not None:
            weights = jnp.asarray(self.class_weights, jnp.float32)[y]
            loss = jnp.sum(ce * weights) / jnp.sum(weights)
        else:
            loss = jnp.mean(ce)
        return loss, {"correct": jnp.sum(jnp.argmax(logits, axis=-1) == y)}


def augment(images: np.ndarray, masks: np.ndarray, rng: np.random.Generator, jitter: float):
    """Each crop turned or flipped (one of 8, the same for its mask) and its contrast, brightness and (colour
    images) channel gains jittered, clipped to [0, 1]."""
    from deepflows.imaging.isl.patches import dihedral

    images, masks = images.copy(), masks.copy()
    n, channels = len(images), images.shape[-1]
    for i, k in enumerate(rng.integers(0, 8, n)):
        # draw k: k quarter turns, after a left-right flip when k >= 4 (the shipped models' draws), which is
        # dihedral's transform 4 + (-k) % 4 (a flip after turning the other way)
        j = k if k < 4 else 4 + (-k) % 4
        images[i], masks[i] = dihedral(images[i], j), dihedral(masks[i], j)
    contrast = np.exp(rng.uniform(-jitter, jitter, (n, 1, 1, 1)))
    brightness = rng.uniform(-jitter, jitter, (n, 1, 1, 1)) / 2
    gain = np.exp(rng.uniform(-jitter, jitter, (n, 1, 1, channels)) / 3) if channels == 3 else 1.0
    mean = images.mean(axis=(1, 2, 3), keepdims=True)
    images = np.clip(((images - mean) * contrast + mean + brightness) * gain, 0, 1).astype(np.float32)
    return images, masks


def zoomed_crop(regions, crop: int, zoom: float, rng: np.random.Generator):
    """One crop of round(crop / zoom) pixels drawn as random_crops draws them, resized to crop x crop (area
    averaging for the image, nearest neighbour for the mask); a region too small for it is drawn at zoom 1."""
    import cv2

    from deepflows.imaging.segment.tasks import random_crops

    side = int(round(crop / zoom))
    if not any(min(r.mask.shape) >= side for r in regions):
        side = crop
    image, mask = (a[0] for a in random_crops(regions, side, 1, rng))
    if side == crop:
        return image, mask
    inter = cv2.INTER_AREA if side > crop else cv2.INTER_LINEAR
    image = cv2.resize(image, (crop, crop), interpolation=inter).reshape(crop, crop, -1)
    return image, cv2.resize(mask, (crop, crop), interpolation=cv2.INTER_NEAREST)


# ----------------------------------------------------------------------------- the task


class SegmentTask(Task):
    """DeepLab on augmented crops of a task store's train regions; tuned on its tune regions, predicted whole."""

    inputs_name = "task store"
    export_dtype = np.float16
    plotted = {"train": ("pixel_accuracy",), "tune": ("miou", "boundary_f1"), "loss": "loss (pixel cross-entropy)",
               "metrics_label": "pixel accuracy (train), mIoU and boundary F1 (tune)"}  # fmt: skip

    def __init__(self, cfg: dict):
        from deepflows.imaging.segment.tasks import in_memory, open_task
        from deepflows.nn.data import store_fingerprint

        self.cfg = cfg
        data = cfg["data"]
        self.task = open_task(data["task"])
        self.classes = self.task.classes
        weights = data.get("class_weights")
        if weights is not None and len(weights) != len(self.classes):
            raise UserError(f"data.class_weights: {len(weights)} weights for {len(self.classes)} classes "
                            f"({', '.join(self.classes)})")  # fmt: skip
        self.train = in_memory(self.task.regions("train"))
        self.tune = in_memory(self.task.regions("tune"))
        crop = int(data["crop"])
        if not any(min(r.mask.shape) >= crop for r in self.train):
            raise UserError(f"{self.task.path}: no {crop}x{crop} crop fits in a train region (data.crop)")
        cfg["model"]["options"]["classes"] = len(self.classes)  # recorded in model.json's options, which rebuild it
        self.channels = list(self.task.attrs["channels"])
        self.shape = [crop, crop, len(self.channels)]
        self.examples = int(sum(r.mask.size for r in self.train) // crop**2)  # crop-sized pieces of the train regions
        self.data = {"task": store_fingerprint(self.task.path), "task_name": self.task.name}
        self.loss = PixelLoss(tuple(float(w) for w in weights) if weights is not None else None)

    def build_model(self):
        from deepflows.imaging.segment.deeplab import load_imagenet_backbone

        model = super().build_model()
        if self.cfg["backbone"] == "imagenet" and not self.cfg.get("init"):
            load_imagenet_backbone(model)
        return model

    def batches(self, step: int):
        from deepflows.imaging.segment.tasks import random_crops

        seed, size = self.cfg["training"]["seed"], self.cfg["training"]["batch_size"]
        crop, jitter = self.shape[0], float(self.cfg["data"]["jitter"])
        low, high = np.log(self.cfg["data"]["scales"])
        while True:
            rng = np.random.default_rng([seed, step])
            if low == high == 0:
                images, masks = random_crops(self.train, crop, size, rng)
            else:
                images, masks = zip(*(zoomed_crop(self.train, crop, np.exp(rng.uniform(low, high)), rng)
                                      for _ in range(size)))  # fmt: skip
                images, masks = np.stack(images), np.stack(masks)
            yield augment(images, masks, rng, jitter)
            step += 1

    def train_metrics(self, aux: dict, examples: int) -> dict:
        return {"pixel_accuracy": float(aux["correct"] / (examples * self.shape[0] * self.shape[1]))}

    def evaluate(self, model) -> dict:
        from deepflows.imaging.segment.metrics import score_regions
        from deepflows.imaging.segment.predict import Segmenter

        segmenter = Segmenter(model, self.classes, tile=int(self.cfg["data"]["tile"]))
        pairs, nll, pixels, correct = [], 0.0, 0, 0
        for region in self.tune:
            probs = segmenter.probabilities(region.image)
            truth = region.mask
            picked = np.take_along_axis(probs, truth[..., None].astype(np.int64), -1)[..., 0]
            nll += float(-np.log(np.clip(picked, 1e-7, 1)).sum())
            predicted = probs.argmax(-1).astype(np.uint8)
            correct += int((predicted == truth).sum())
            pixels += truth.size
            pairs.append((predicted, truth))
        scores = score_regions(pairs, len(self.classes))
        return {"loss": nll / pixels, "pixel_accuracy": correct / pixels, "miou": scores["miou"],
                "boundary_f1": scores["boundary_f1"], "iou": scores["iou"]}  # fmt: skip

    def better(self, new: dict, best: dict | None) -> bool:
        if best is None:
            return True
        metric = self.cfg["evaluation"]["select_by"]
        if metric != "loss" and new[metric] != best[metric]:
            return new[metric] > best[metric]
        return new["loss"] < best["loss"]

    def describe(self, result: dict) -> str:
        return (f"loss {result['loss']:.4f}, pixel accuracy {result['pixel_accuracy']:.4f}, mIoU "
                f"{result['miou']:.4f}, boundary F1 {result['boundary_f1']:.4f}")  # fmt: skip

    def summary(self) -> str:
        return (f"task {self.task.name}: {len(self.train)} train regions ({sum(r.mask.size for r in self.train):,} "
                f"px), {len(self.tune)} tune regions; classes {', '.join(self.classes)}; "
                f"{self.shape[0]}-px crops of {len(self.channels)} channels")  # fmt: skip

    def model_meta(self) -> dict:
        attrs = self.task.attrs
        return {"name": "segmentation", "task": self.task.name, "classes": self.classes,
                "input_normalization": attrs["input_normalization"], "recipe": attrs.get("recipe"),
                "backbone": self.cfg["backbone"], "training_data": self.data}  # fmt: skip
