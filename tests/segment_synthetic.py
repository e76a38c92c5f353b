"""Tiny synthetic stand-ins of the segmentation tasks' shared data, under their real names (test helper)."""

from __future__ import annotations

import numpy as np
import tifffile
from PIL import Image

from deepflows.imaging.segment.tasks import BBBC006, DSB_IMAGE, DSB_MASK, FIELD_SPLIT, SLIDE, TCIA


def nuclei_image(shape, count, seed, dtype=np.uint16):
    """A nuclear stain: `count` bright disks of radius 5-7 on a dim noisy background."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = 200 + rng.normal(0, 10, shape)
    for cy, cx, r in zip(rng.integers(8, shape[0] - 8, count), rng.integers(8, shape[1] - 8, count),
                         rng.integers(5, 8, count)):  # fmt: skip
        image += 3000 * ((y - cy) ** 2 + (x - cx) ** 2 <= r**2)
    return np.clip(image, 0, np.iinfo(dtype).max).astype(dtype)


def fake_shared_data(root):
    """Tiny stand-ins of the shared data's fluorescence and H&E files, under their real names."""
    for i, field in enumerate(field for fields in FIELD_SPLIT.values() for field in fields):
        path = root / BBBC006.format(field=field)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(nuclei_image((48, 64), 5, seed=i)).save(path)
    (root / DSB_IMAGE).parent.mkdir(parents=True, exist_ok=True)
    human = np.zeros((40, 40), np.uint16)
    human[5:15, 5:12], human[5:15, 12:20], human[25:35, 25:35] = 1, 2, 3  # 1 and 2 touch
    tifffile.imwrite(root / DSB_IMAGE, (100 + 1000 * (human > 0)).astype(np.uint16))
    tifffile.imwrite(root / DSB_MASK, human)
    rng = np.random.default_rng(0)
    slide = np.full((120, 100, 3), 240, np.float64)
    slide[10:110, 10:90] = (230, 140, 190)  # pink tissue
    slide[30:90, 40:80] = (100, 60, 150)  # a purple, nuclei-rich region
    slide = np.clip(slide + rng.normal(0, 3, slide.shape), 0, 255).astype(np.uint8)
    (root / SLIDE).parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(root / SLIDE, slide, photometric="rgb")
    Image.fromarray(slide[20:70, 20:90]).save(root / TCIA, quality=95)
    return slide
