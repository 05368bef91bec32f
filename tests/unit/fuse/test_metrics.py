"""Vectorised bootstrap metrics agree with scikit-learn on plain and resampled data, ties included."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from moderation.fuse.calibration import apply_platt, fit_platt
from moderation.fuse.metrics import (
    Estimate,
    bootstrap_weights,
    expected_calibration_error,
    weighted_auroc,
    weighted_average_precision,
)


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(400) < 0.3).astype(float)
    scores = np.round(labels * 0.8 + rng.random(400), 1)  # rounding makes many ties
    return scores, labels


def test_auroc_and_ap_match_sklearn_on_each_resample() -> None:
    scores, labels = _data()
    weights = bootstrap_weights(scores.size, 5, seed=1)
    aurocs = weighted_auroc(scores, labels, weights)
    aps = weighted_average_precision(scores, labels, weights)
    for row in range(5):
        repeated = np.repeat(np.arange(scores.size), weights[row].astype(int))
        assert abs(aurocs[row] - roc_auc_score(labels[repeated], scores[repeated])) < 1e-12
        assert abs(aps[row] - average_precision_score(labels[repeated], scores[repeated])) < 1e-12


def test_estimate_interval_brackets_value() -> None:
    scores, labels = _data(2)
    estimate = Estimate.from_samples(weighted_auroc(scores, labels, bootstrap_weights(scores.size, 300, seed=3)))
    assert estimate.low <= estimate.value <= estimate.high
    assert estimate.high - estimate.low < 0.15


def test_ece_of_perfectly_calibrated_bins_is_small() -> None:
    rng = np.random.default_rng(4)
    probs = rng.random(20000)
    labels = (rng.random(20000) < probs).astype(float)
    assert expected_calibration_error(probs, labels) < 0.02
    assert expected_calibration_error(np.full(1000, 0.9), np.zeros(1000)) > 0.85


def test_platt_recovers_slopes_and_handles_constant_parts() -> None:
    rng = np.random.default_rng(5)
    parts = np.c_[rng.normal(size=5000) * 3, rng.normal(size=5000), np.zeros(5000)]
    labels = (rng.random(5000) < apply_platt(parts, [0.5, 0.0, 0.0], -1.0)).astype(float)
    weights, bias = fit_platt(parts, labels)
    assert abs(weights[0] - 0.5) < 0.05 and weights[1] == 0.0 and weights[2] == 0.0 and abs(bias + 1.0) < 0.1
    weights, bias = fit_platt(np.zeros((100, 3)), np.r_[np.ones(25), np.zeros(75)])
    assert weights == [0.0, 0.0, 0.0] and abs(apply_platt(np.zeros((1, 3)), weights, bias)[0] - 26 / 102) < 1e-9
