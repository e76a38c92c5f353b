"""Synthetic defocus (Yang et al. 2018): an in-focus field convolved with an Airy-disk point-spread function
whose width grows with the defocus level, then Poisson noise at the image's brightness.

Level k (0..LEVELS-1) blurs with an Airy pattern whose first dark ring has radius `RADIUS_PER_LEVEL * k`
pixels (level 0: no blur). The image's values are taken as photon counts times `gain`, so the noise is
Poisson(image * gain) / gain: at gain 1 a background of 120 counts has a standard deviation of about 11.
"""

from __future__ import annotations

import numpy as np

LEVELS = 11
RADIUS_PER_LEVEL = 2.0  # pixels of Airy first-zero radius per level
_FIRST_ZERO = 3.8317059702075125  # first zero of the Bessel function J1


def airy_psf(radius: float, supersample: int = 5) -> np.ndarray:
    """A normalised 2-D Airy pattern with its first zero at `radius` pixels, integrated over each pixel
    (supersampled), cut off after the fourth ring; a 1x1 delta for radius 0."""
    from scipy.special import j1

    if radius <= 0:
        return np.ones((1, 1), np.float32)
    half = int(np.ceil(radius * 13.3237 / _FIRST_ZERO)) + 1  # 13.3237: fourth zero of J1
    n = (2 * half + 1) * supersample
    coords = (np.arange(n) + 0.5) / supersample - (half + 0.5)
    r = np.hypot(*np.meshgrid(coords, coords, indexing="ij"))
    v = _FIRST_ZERO * r / radius
    with np.errstate(invalid="ignore", divide="ignore"):
        intensity = np.where(v > 0, (2 * j1(v) / v) ** 2, 1.0)
    intensity[r > half] = 0.0
    psf = intensity.reshape(2 * half + 1, supersample, 2 * half + 1, supersample).sum(axis=(1, 3))
    return (psf / psf.sum()).astype(np.float32)


def blur(image: np.ndarray, level: int) -> np.ndarray:
    """`image` [H, W] convolved with the level's PSF; edges mirrored, so the borders do not darken."""
    from scipy.signal import fftconvolve

    psf = airy_psf(RADIUS_PER_LEVEL * level)
    if psf.size == 1:
        return image.astype(np.float32)
    pad = psf.shape[0] // 2
    padded = np.pad(image.astype(np.float32), pad, mode="symmetric")
    return fftconvolve(padded, psf, mode="valid").astype(np.float32)


def poisson_noise(image: np.ndarray, rng: np.random.Generator, gain: float = 1.0) -> np.ndarray:
    """Shot noise at the image's brightness: Poisson(image * gain) / gain."""
    return (rng.poisson(np.clip(image, 0, None) * gain) / gain).astype(np.float32)


def defocus_stack(image: np.ndarray) -> np.ndarray:
    """All levels of one in-focus field, noise-free: [LEVELS, H, W] float32."""
    return np.stack([blur(image, level) for level in range(LEVELS)])
