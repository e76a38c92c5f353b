"""The built-in segmenter: haematoxylin-dense regions of an H&E frame (`deepflows arm --model classical`).

No learning: the haematoxylin optical density from scikit-image's colour deconvolution (`rgb2hed`, Ruifrok and
Johnston's H&E-DAB matrix), smoothed with a Gaussian at the scale of a region (clusters of nuclei, not single
nuclei), and turned into a [0, 1] score by a logistic step centred on a fixed density, `H_THRESHOLD`. The
score is 0.5 exactly where the smoothed density crosses `H_THRESHOLD`, so `--threshold 0.5` outlines the
regions denser than it. It is a ramp, not a calibrated probability. `H_THRESHOLD` was read off
CMU-1-Small-Region (Aperio, 20x): glass and stroma stay below 0.01, eosin-rich tissue around 0.02-0.04,
nuclei-dense areas 0.06 and above.

It works on the frame reduced to at most `WORK_SIDE` pixels a side (regions are larger than that resolution
can show) and scales the score back up, so it costs a few milliseconds a frame at 1024x768.
"""

from __future__ import annotations

import numpy as np

H_THRESHOLD = 0.05  # haematoxylin optical density (rgb2hed units) where the score is 0.5
H_SOFTNESS = 0.01  # density from the threshold to a score of 0.73 (one logistic unit)
WORK_SIDE = 320  # longest side (px) the density is computed at
REGION_SIGMA = 0.012  # Gaussian sigma as a fraction of the frame's longest side (about 4 px at WORK_SIDE)


def haematoxylin_score(frame: np.ndarray) -> np.ndarray:
    """float32 [H, W] in [0, 1] for a uint8 [H, W, 3] RGB frame: 0.5 where the smoothed haematoxylin density
    equals `H_THRESHOLD`, higher where denser."""
    import cv2
    from scipy.ndimage import gaussian_filter
    from skimage.color import rgb2hed

    height, width = frame.shape[:2]
    factor = max(1, -(-max(height, width) // WORK_SIDE))
    small = cv2.resize(frame, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)
    density = gaussian_filter(rgb2hed(small)[..., 0], REGION_SIGMA * max(small.shape[:2]), mode="nearest")
    score = 1.0 / (1.0 + np.exp(-(density - H_THRESHOLD) / H_SOFTNESS))
    return cv2.resize(score.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
