"""`deepflows focus`: rate the focus quality of microscope images, per 84 x 84 patch and per image.

    deepflows focus --images DIR|GLOB|FILE|OME-Zarr ... --model resources/models/focus-quality --out DIR
                    [--channel C] [--batch-size N] [--threads N]

Every 2-D plane of an image (each z and t of the chosen channel) is cut into non-overlapping patches, scored
tile by tile with Dask (deepflows.imaging.tiles) and rated as a whole by the certainty-weighted mean of its
patches' distributions. Writes, under a temporary name renamed to DIR when complete:

    DIR/patches.csv        image, plane, row, col, y, x, level, certainty, p0..p10
    DIR/images.csv         image, plane, status (ok, or no_content when no patch shows anything, e.g. an
                           all-black image), patches, level, expected_level, certainty
    DIR/montages/NAME.png  the plane with each patch's border coloured by level (hue: red in focus to magenta
                           most defocused) and certainty (lightness: dark when uncertain), as the Fiji plugin,
                           with a legend of both under it
    DIR/predictions/NAME.ome.zarr   for OME-Zarr inputs: the predictions as OME-Zarr ([level, certainty,
                           p0..p10] x patch rows x patch columns, scaled to lie over the image)
"""

from __future__ import annotations

import argparse
import colorsys
import logging
import re
from pathlib import Path

import numpy as np

from deepflows.arguments import non_negative_int, positive_int
from deepflows.errors import UserError
from deepflows.imaging.focus_model import PATCH, Scorer, aggregate, certainty
from deepflows.outputs import atomic_output, check_new_output

log = logging.getLogger("deepflows.focus")
MONTAGE_MAX = 4096  # longest montage side in pixels; larger planes are shown subsampled


def is_ome_zarr(path: Path) -> bool:
    return path.is_dir() and ((path / "zarr.json").is_file() or (path / ".zattrs").is_file())


def find_inputs(specs: list[str]) -> list[Path]:
    """OME-Zarr groups and image files named by directories, globs or paths."""
    from deepflows.imaging.io import expand_images

    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if is_ome_zarr(path):
            found.append(path)
        elif path.is_dir():
            zarrs = sorted(p for p in path.iterdir() if is_ome_zarr(p))
            found += zarrs if zarrs else expand_images(spec)
        else:
            found += expand_images(spec)
    return found


def planes(source: Path, channel: int):
    """(plane label, lazy [H, W] Dask array, pixel size in y and x) for every plane of the chosen channel."""
    import dask.array as da

    if is_ome_zarr(source):
        from deepflows.imaging.io import open_ome_zarr

        levels, axes, multiscales = open_ome_zarr(source)
        image = levels[0]
        scale = next((t["scale"] for t in multiscales["datasets"][0].get("coordinateTransformations", [])
                      if t.get("type") == "scale"), [1.0] * len(axes))  # fmt: skip
    else:
        from deepflows.imaging.io import read_image

        pixels, axes = read_image(source)
        image, scale = da.from_array(pixels, chunks=(1,) * (pixels.ndim - 2) + (2048, 2048)), [1.0] * len(axes)
    if not axes.endswith("yx"):
        raise UserError(f"{source}: expected y and x as the last axes, found '{axes}'")
    if "c" in axes:
        n = image.shape[axes.index("c")]
        if not 0 <= channel < n:
            raise UserError(f"{source}: --channel {channel} but the image has {n} channel(s)")
        image = da.take(image, channel, axis=axes.index("c"))
        axes = axes.replace("c", "")
    if min(image.shape[-2:]) < PATCH:
        raise UserError(f"{source}: {image.shape[-2]}x{image.shape[-1]} pixels is smaller than one "
                        f"{PATCH}x{PATCH} patch")  # fmt: skip
    pixel = (float(scale[-2]), float(scale[-1]))
    for index in np.ndindex(*image.shape[:-2]):
        label = ",".join(f"{a}={i}" for a, i in zip(axes, index))
        yield label, image[index], pixel


def border_colour(level: int, cert: float, levels: int) -> tuple[int, int, int]:
    rgb = colorsys.hls_to_rgb(0.8 * level / (levels - 1), 0.1 + 0.4 * cert, 1.0)
    return tuple(round(255 * v) for v in rgb)


def montage(plane, probs: np.ndarray, out: Path, width: int = 3) -> None:
    """The plane (contrast-stretched to 8 bits, subsampled to at most MONTAGE_MAX a side) with each patch
    framed in its border colour; a patch without content (certainty 0) is framed in dark grey."""
    from PIL import Image

    step = max(1, -(-max(plane.shape) // MONTAGE_MAX))
    view = np.asarray(plane[::step, ::step], np.float32)
    lo, hi = np.percentile(view, [0.5, 99.8])
    grey = np.clip((view - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    certs, levels = certainty(probs), probs.shape[-1]
    size = PATCH / step
    for r in range(probs.shape[0]):
        for c in range(probs.shape[1]):
            colour = (40, 40, 40)
            if certs[r, c] > 1e-6:
                colour = border_colour(int(probs[r, c].argmax()), float(certs[r, c]), levels)
            y0, x0 = int(r * size), int(c * size)
            y1, x1 = int((r + 1) * size), int((c + 1) * size)
            w = max(1, min(width, (y1 - y0) // 4))
            for sl in ((slice(y0, y0 + w), slice(x0, x1)), (slice(y1 - w, y1), slice(x0, x1)),
                       (slice(y0, y1), slice(x0, x0 + w)), (slice(y0, y1), slice(x1 - w, x1))):  # fmt: skip
                rgb[sl] = colour
    key = legend(levels)
    canvas = np.full((rgb.shape[0] + key.shape[0], max(rgb.shape[1], key.shape[1]), 3), 255, np.uint8)
    canvas[: rgb.shape[0], : rgb.shape[1]] = rgb
    canvas[rgb.shape[0] :, : key.shape[1]] = key
    Image.fromarray(canvas).save(out)


LEGEND_SWATCH = 28  # px: one colour box of the montage legend


def legend(levels: int) -> np.ndarray:
    """The montage's key, an RGB strip to go under the plane: one swatch per defocus level at full certainty
    (0 = in focus), the lightness ramp of certainty for level 0, and the grey of patches without content."""
    from PIL import Image, ImageDraw, ImageFont

    box, gap = LEGEND_SWATCH, 6
    ramp = [0.0, 0.25, 0.5, 0.75, 1.0]
    no_content = gap + 130 + len(ramp) * (box + gap) + gap  # where the "no content" swatch starts
    width = max(levels * (box + gap), no_content + box + 80) + 2 * gap
    strip = Image.new("RGB", (width, 2 * box + 48), "white")
    draw, font = ImageDraw.Draw(strip), ImageFont.load_default()
    draw.text((gap, 2), "patch border: defocus level (0 = in focus, most likely level)", fill="black", font=font)
    for level in range(levels):
        x = gap + level * (box + gap)
        draw.rectangle([x, 14, x + box, 14 + box], fill=border_colour(level, 1.0, levels))
        draw.text((x + 8, 16 + box // 4), str(level), fill="white" if level > 6 else "black", font=font)
    y = 20 + box
    draw.text((gap, y), "certainty (level 0):", fill="black", font=font)
    for i, cert in enumerate(ramp):
        x = gap + 130 + i * (box + gap)
        draw.rectangle([x, y + 10, x + box, y + 10 + box // 2], fill=border_colour(0, cert, levels))
        draw.text((x + 4, y), f"{cert:g}", fill="black", font=font)
    draw.rectangle([no_content, y + 10, no_content + box, y + 10 + box // 2], fill=(40, 40, 40))
    draw.text((no_content + box + 4, y + 12), "no content", fill="black", font=font)
    return np.asarray(strip)


def safe_name(source: Path, label: str) -> str:
    name = re.sub(r"\.(ome\.zarr|zarr|png|tiff?)$", "", source.name, flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{name}_{label}" if label else name)


def score_images(sources: list[Path], model_dir: str | Path, out: str | Path, channel: int = 0,
                 batch_size: int = 128, threads: int | None = None, block: int = 16) -> tuple:  # fmt: skip
    """Score every plane of every source into `out` (see the module doc); returns the (patches, images)
    tables as DataFrames."""
    import dask
    import pandas as pd

    from deepflows.imaging.tiles import score_plane, write_predictions
    from deepflows.nn.model_dir import load_model

    out = check_new_output(out)
    model, meta = load_model(model_dir)
    if meta.get("architecture") != "focus_cnn":
        raise UserError(f"{model_dir}: a {meta.get('architecture')} model, not a focus-quality model")
    scorer = Scorer(model, batch_size)
    levels = scorer.levels
    patch_rows, image_rows = [], []
    # The whole directory is written under a temporary name: a reader sees all of it or nothing.
    with atomic_output(out) as tmp:
        (tmp / "montages").mkdir(parents=True)
        with dask.config.set(scheduler="threads", num_workers=threads):
            for source in sources:
                for label, plane, pixel in planes(source, channel):
                    name = safe_name(source, label)
                    lazy = score_plane(plane, scorer, block=block)
                    if is_ome_zarr(source):
                        target = tmp / "predictions" / f"{name}.ome.zarr"
                        target.parent.mkdir(exist_ok=True)
                        attrs = {"source": str(source), "plane": label, "model_sha256": meta.get("sha256")}
                        probs = write_predictions(lazy, target, pixel, attrs)
                    else:
                        probs = lazy.compute()
                    certs = certainty(probs)
                    rr, cc = np.meshgrid(range(probs.shape[0]), range(probs.shape[1]), indexing="ij")
                    table = {"image": str(source), "plane": label, "row": rr.ravel(), "col": cc.ravel(),
                             "y": rr.ravel() * PATCH, "x": cc.ravel() * PATCH,
                             "level": probs.argmax(-1).ravel(), "certainty": certs.ravel()}  # fmt: skip
                    table.update({f"p{k}": probs[..., k].ravel() for k in range(levels)})
                    patch_rows.append(pd.DataFrame(table))
                    rating = aggregate(probs.reshape(-1, levels), certs.ravel())
                    row = {"image": str(source), "plane": label, "patches": certs.size, "status": "no_content"}
                    if rating:
                        row.update(status="ok", **{k: rating[k] for k in ("level", "expected_level", "certainty")})
                    image_rows.append(row)
                    summary = (
                        f"level {rating['level']} (certainty {rating['certainty']:.2f})" if rating else "no content"
                    )
                    log.info("%s %s: %s", source, label, summary)
                    montage(plane, probs, tmp / "montages" / f"{name}.png")
        patches = pd.concat(patch_rows, ignore_index=True)
        columns = ["image", "plane", "status", "patches", "level", "expected_level", "certainty"]
        images = pd.DataFrame(image_rows, columns=columns)
        images["level"] = images["level"].astype("Int64")
        patches.to_csv(tmp / "patches.csv", index=False, float_format="%.4f")
        images.to_csv(tmp / "images.csv", index=False, float_format="%.4f")
    return patches, images


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", nargs="+", required=True, help="image files, directories, globs or OME-Zarr groups")
    p.add_argument("--model", required=True, help="model directory (e.g. resources/models/focus-quality)")
    p.add_argument("--out", required=True, help="output directory (must not exist)")
    p.add_argument("--channel", type=non_negative_int, default=0, help="channel to rate in multi-channel images (default 0)")
    p.add_argument("--batch-size", type=int, default=128, help="patches per model call (default 128)")
    p.add_argument("--threads", type=positive_int, default=None, help="Dask threads (default: all cores)")


def run(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    score_images(find_inputs(args.images), args.model, args.out, channel=args.channel,
                 batch_size=args.batch_size, threads=args.threads)  # fmt: skip
