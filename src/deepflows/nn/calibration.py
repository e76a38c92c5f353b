"""Temperature scaling (Guo et al. 2017): one scalar T, fitted on held-out examples, divides the logits so
that the softmax probabilities, and the GQ and QUAL made from them, match observed error rates better.

Dividing every logit by the same T > 0 never changes which class is largest, so the calls stay the same;
only their confidence moves. T is fitted at export on the tune split (never on evaluation data) and kept
in model.json under `calibration`.
"""

from __future__ import annotations

import numpy as np

# log T is searched in this range: T from 1/8 to 8 covers any network that is not broken.
LOG_T_RANGE = (-np.log(8.0), np.log(8.0))


def mean_nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / temperature)."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, tolerance: float = 1e-4) -> float:
    """The T minimising mean_nll, by golden-section search over log T (the NLL is convex in 1/T)."""
    if len(labels) == 0:
        raise ValueError("no examples to fit a temperature on")
    lo, hi = LOG_T_RANGE
    ratio = (np.sqrt(5.0) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = mean_nll(logits, labels, np.exp(a)), mean_nll(logits, labels, np.exp(b))
    while hi - lo > tolerance:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = mean_nll(logits, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = mean_nll(logits, labels, np.exp(b))
    return float(np.exp((lo + hi) / 2))


def temperature_of(meta: dict) -> float:
    """The temperature a model directory's model.json asks for (1.0 for models without calibration)."""
    return float((meta.get("calibration") or {}).get("temperature", 1.0))
