"""Temperature scaling: recovers the temperature that made over-confident logits, and never moves a call."""

from __future__ import annotations

import numpy as np
import pytest

from deepflows.nn.calibration import fit_temperature, mean_nll, temperature_of


def sample_labels(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return np.array([rng.choice(3, p=row) for row in p])


def test_recovers_the_temperature_of_overconfident_logits():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2.0, (20_000, 3))
    labels = sample_labels(true_logits, rng)
    for scale in (0.5, 2.5):  # under- and over-confident by these factors
        fitted = fit_temperature(true_logits * scale, labels)
        assert fitted == pytest.approx(scale, rel=0.05)
        assert mean_nll(true_logits * scale, labels, fitted) < mean_nll(true_logits * scale, labels)
    assert fit_temperature(true_logits, labels) == pytest.approx(1.0, rel=0.05)


def test_mean_nll_is_stable_and_argmax_free_of_temperature():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    assert mean_nll(logits, np.array([0, 2])) == pytest.approx(np.log(3) / 2)
    assert np.isfinite(mean_nll(logits, np.array([2, 0])))
    with pytest.raises(ValueError, match="no examples"):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, np.int64))


def test_temperature_of_model_meta():
    assert temperature_of({}) == 1.0 and temperature_of({"calibration": None}) == 1.0
    assert temperature_of({"calibration": {"method": "temperature", "temperature": 1.7}}) == 1.7
