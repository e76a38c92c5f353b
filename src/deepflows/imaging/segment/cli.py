"""`deepflows segment`: segment images of any size with a trained model; masks, probabilities and overlays.

    deepflows segment --images IMG [IMG ...] --model resources/models/DIR --out DIR [--format png|ome-zarr]
                      [--tile 512] [--threads 2]

Images: PNG, TIFF (z-stacks and channels), Aperio SVS, OME-Zarr images and In Silico Labeling wells, with as
many channels (planes) as the model reads (deepflows.imaging.segment.inputs). Each is scaled as the model's
training images were (model.json `input_normalization`) and predicted with Dask tile by tile: each --tile x
--tile block is read with 32 px of mirrored context around it, predicted, and only its centre kept, so memory
stays bounded by a few tiles per thread whatever the image's size. Per image NAME, in --out:

    NAME.mask.png        the class of every pixel (0, 1, ...: model.json `classes`)      --format png
    NAME.ome.zarr        the class probabilities (cyx, float32, one channel per class)    --format ome-zarr
                         and the classes as an NGFF label image (labels/classes)
    NAME.overlay.png     the image with each class's contours in its colour and a legend (at most 2048 px a side)
    summary.csv          per image: size, the fraction of each class, its connected regions, seconds

Every output is written under a temporary name and renamed when complete; an image that fails leaves nothing.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from deepflows.arguments import positive_int
from deepflows.errors import UserError

log = logging.getLogger("deepflows.segment")
FORMATS = ("png", "ome-zarr")
OVERLAY_SIDE = 2048
# contour colours (RGB) of classes 1, 2, ...: green first, as the AR microscope draws its detections
COLOURS = ((0, 255, 0), (255, 0, 255), (0, 200, 255), (255, 160, 0))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", nargs="+", required=True, help="images: PNG, TIFF, SVS, OME-Zarr or an ISL well")
    p.add_argument("--model", required=True, help="a segment-train model directory")
    p.add_argument("--out", required=True, help="the output directory (created; files per image, summary.csv)")
    p.add_argument("--format", choices=FORMATS, default="png", help="masks as PNG or probabilities as OME-Zarr")
    p.add_argument("--tile", type=positive_int, default=512, help="tile side in pixels (default 512)")
    p.add_argument("--threads", type=positive_int, default=2, help="Dask threads (tiles predicted at once)")


def display_image(scaled: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] to draw on: RGB as it is, any other input its middle channel (plane) in grey."""
    picture = scaled if scaled.shape[-1] == 3 else np.repeat(scaled[..., scaled.shape[-1] // 2, None], 3, axis=-1)
    return (np.clip(picture, 0, 1) * 255).round().astype(np.uint8)


def draw_overlay(picture: np.ndarray, mask: np.ndarray, classes: list[str]) -> np.ndarray:
    """The picture with the contours of every class but the first (background) in its colour, and a legend."""
    import cv2

    image = np.ascontiguousarray(picture.copy())
    thickness = max(1, round(max(image.shape[:2]) / 500))
    for k in range(1, len(classes)):
        contours, _ = cv2.findContours((mask == k).astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(image, contours, -1, COLOURS[(k - 1) % len(COLOURS)], thickness)
    scale = max(0.5, max(image.shape[:2]) / 1500)
    line = int(30 * scale)
    box_h = line * (len(classes) - 1) + line // 2
    box_w = int(scale * 20 * max(len(c) for c in classes[1:])) + line
    cv2.rectangle(image, (0, 0), (box_w, box_h), (255, 255, 255), -1)
    for k, name in enumerate(classes[1:], start=1):
        y = line * k
        colour = COLOURS[(k - 1) % len(COLOURS)]
        cv2.line(image, (line // 4, y - line // 4), (line, y - line // 4), colour, max(2, thickness))
        cv2.putText(image, name, (line + line // 4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0),
                    max(1, int(scale)), cv2.LINE_AA)  # fmt: skip
    return image


def regions(mask: np.ndarray, k: int) -> int:
    """Connected regions of class k (8-connected)."""
    import cv2

    return cv2.connectedComponents((mask == k).astype(np.uint8), connectivity=8)[0] - 1


def write_png(path: Path, image: np.ndarray) -> None:
    """A PNG (grey, or RGB) written whole or not at all."""
    import cv2

    from deepflows.outputs import atomic_output

    ok, data = cv2.imencode(".png", image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError(f"{path}: PNG encoding failed")
    with atomic_output(path) as tmp:
        tmp.write_bytes(data.tobytes())


def image_name(path: Path) -> str:
    """NAME of an input (its file name without the suffixes .ome.zarr, .ome.tif, .png, ...)."""
    name = path.name
    for suffix in (".zarr", ".tiff", ".tif", ".png", ".svs", ".ome"):
        name = name.removesuffix(suffix)
    return name


def segment_image(path: Path, segmenter, meta: dict, out: Path, fmt: str, threads: int) -> dict:
    """Predict one image and write its outputs into `out`; returns its summary row."""
    import dask

    from deepflows.imaging.segment.inputs import apply_scaling, read_input, scaling

    start = time.perf_counter()
    raw = read_input(path)
    channels, classes = int(meta["input_shape"][-1]), list(meta["classes"])
    if raw.shape[-1] != channels:
        raise UserError(f"{path}: {raw.shape[-1]} channels (planes); the model reads {channels}")
    scaled = raw.map_blocks(apply_scaling, scaling(raw, meta["input_normalization"]), dtype=np.float32)
    probs = segmenter.lazy(scaled)  # [classes, H, W]
    name = image_name(path)
    with dask.config.set(scheduler="threads", num_workers=threads):
        if fmt == "ome-zarr":
            mask = _write_ome_zarr(out / f"{name}.ome.zarr", probs, classes, meta, path)
        else:
            mask = np.asarray(probs.argmax(axis=0)).astype(np.uint8)
            write_png(out / f"{name}.mask.png", mask)
        h, w = mask.shape
        step = max(1, int(np.ceil(max(h, w) / OVERLAY_SIDE)))
        picture = display_image(np.asarray(scaled[::step, ::step]))
    write_png(out / f"{name}.overlay.png", draw_overlay(picture, mask[::step, ::step], classes))
    counts = np.bincount(mask.ravel(), minlength=len(classes))
    row = {"image": str(path), "height": h, "width": w, "seconds": round(time.perf_counter() - start, 2)}
    for k, cls in enumerate(classes):
        row[f"fraction {cls}"] = round(float(counts[k] / mask.size), 6)
        if k:
            row[f"regions {cls}"] = regions(mask, k)
    log.info("%s: %dx%d -> %s", path, h, w, ", ".join(f"{c} {row[f'fraction {c}']:.3f}" for c in classes))
    return row


def _write_ome_zarr(target: Path, probs, classes: list[str], meta: dict, source: Path) -> np.ndarray:
    """The probabilities as an OME-Zarr image and the classes as its NGFF label image; returns the classes."""
    import zarr

    from deepflows.imaging.io import OmeZarrWriter
    from deepflows.outputs import atomic_output
    from deepflows.store.integrity import seal

    probs = probs.persist()
    mask = np.asarray(probs.argmax(axis=0)).astype(np.uint8)
    attrs = {"segment": {"model": meta.get("sha256"), "classes": classes, "source": str(source)}}
    writer = OmeZarrWriter(target, "cyx", chunks=512, channel_names=classes, attrs=attrs)
    label_writer = OmeZarrWriter(target, "yx", chunks=512)
    with atomic_output(target) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        ome = writer.write_into(root, probs.astype(np.float32))
        labels = root.create_group("labels")
        label = labels.create_group("classes")
        label_ome = label_writer.write_into(label, mask, "classes")
        label_ome["image-label"] = {"version": ome["version"], "source": {"image": "../../"},
                                    "properties": [{"label-value": k, "name": c} for k, c in enumerate(classes)]}  # fmt: skip
        label.update_attributes({"ome": label_ome})
        labels.update_attributes({"ome": {"version": ome["version"], "labels": ["classes"]}})
        seal(root, tmp, {"ome": ome, "deepflows": attrs})
    return mask


def run(args: argparse.Namespace) -> None:
    from deepflows.imaging.segment.predict import Segmenter, load_segmentation_model
    from deepflows.outputs import output_directory
    from deepflows.tables import write_tsv

    paths = [Path(p) for p in args.images]
    for path in paths:
        if not path.exists():
            raise UserError(f"{path}: image not found")
    names = [image_name(p) for p in paths]
    if len(set(names)) != len(names):
        raise UserError(f"--images: two images named {next(n for n in names if names.count(n) > 1)!r}; their "
                        "outputs would collide")  # fmt: skip
    model, meta = load_segmentation_model(args.model)
    segmenter = Segmenter(model, list(meta["classes"]), tile=args.tile)
    with output_directory(args.out, whole=True) as out:
        rows = [segment_image(p, segmenter, meta, out, args.format, args.threads) for p in paths]
        write_tsv(rows, list(rows[0]), out / "summary.csv", delimiter=",")
    log.info("%d images -> %s", len(rows), args.out)
