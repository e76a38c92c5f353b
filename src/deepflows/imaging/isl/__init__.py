"""In Silico Labeling (Christiansen et al., Cell 2018): fluorescent labels predicted from a transmitted-light
z-stack. The data contracts every module of this package keeps:

The well (`deepflows isl-ingest`, deepflows.imaging.isl.well): one OME-Zarr (NGFF 0.5) store. Its root image is
the transmitted-light stack, axes czyx, c = 1 ("phase contrast"), z = the planes in acquisition order, raw
uint16; its sub-image `targets/` holds the fluorescence targets, axes czyx, c = the labels (DAPI, MAP2,
NFH), z = 1 (max projections), raw uint16, registered to the stack. The root's attributes `deepflows.isl`
record the per-channel percentile normalisation (`normalization`: channel name -> {low, high,
percentiles}) and the source files with their SHA-256.

Normalisation (`normalize`): (raw - low) / (high - low), with low and high the channel's 0.5th and 99.9th
percentiles over the whole well: inputs are not clipped, targets are clipped to [0, 1] and binned into
`BINS` equal bins (`to_bins`); bin k stands for intensity (k + 0.5) / BINS.

The split (`split_mask`): by space, never by pixel: one quadrant is the test quadrant (never trained on, nor
used for selection), a band of the training quadrants is the tune strip, the rest trains. A patch belongs
to a split only when its whole input window lies in that split.
"""

from __future__ import annotations

import numpy as np

LABELS = ("DAPI", "MAP2", "NFH")
INPUT_CHANNEL = "phase contrast"
BINS = 256
PERCENTILES = (0.5, 99.9)
TRAIN, TUNE, TEST = 0, 1, 2
SPLITS = {"train": TRAIN, "tune": TUNE, "test": TEST}
QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")


def normalization(image: np.ndarray, percentiles=PERCENTILES) -> dict:
    """{low, high, percentiles} of one channel (any shape: all planes of the stack share one)."""
    low, high = (float(v) for v in np.percentile(image, percentiles))
    if not high > low:
        high = low + 1.0  # a constant channel: every pixel normalises to 0
    return {"low": low, "high": high, "percentiles": list(percentiles)}


def normalize(raw, norm: dict) -> np.ndarray:
    """Raw intensities -> float32 in the channel's normalised units (0 at `low`, 1 at `high`)."""
    return (np.asarray(raw, np.float32) - np.float32(norm["low"])) / np.float32(norm["high"] - norm["low"])


def to_bins(target) -> np.ndarray:
    """Normalised target intensities -> bin indices 0..BINS-1 (clipped to [0, 1] first)."""
    return np.clip(np.floor(np.asarray(target, np.float32) * BINS), 0, BINS - 1).astype(np.int32)


def bin_centres() -> np.ndarray:
    return (np.arange(BINS, dtype=np.float32) + 0.5) / BINS


def split_mask(shape: tuple[int, int], test_quadrant: str = "bottom-right", tune_band: int = 96) -> np.ndarray:
    """uint8 [H, W]: TEST over `test_quadrant`; TUNE over the `tune_band` rows of the training half that
    borders the test quadrant's other side (the bottom rows of the bottom-left quadrant when the test quadrant
    is bottom-right; mirrored for the others); TRAIN elsewhere."""
    if test_quadrant not in QUADRANTS:
        raise ValueError(f"test quadrant {test_quadrant!r}: expected one of {', '.join(QUADRANTS)}")
    h, w = shape
    hy, hx = h // 2, w // 2
    bottom, right = test_quadrant.startswith("bottom"), test_quadrant.endswith("right")
    mask = np.full((h, w), TRAIN, np.uint8)
    ys = slice(hy, h) if bottom else slice(0, hy)
    xs = slice(hx, w) if right else slice(0, hx)
    mask[ys, xs] = TEST
    # the tune band: the outer rows of the quadrant beside the test quadrant (same half, other side)
    band = slice(h - tune_band, h) if bottom else slice(0, tune_band)
    mask[band, slice(0, hx) if right else slice(hx, w)] = TUNE
    return mask
