"""Platt scaling over the parts of a logit: calibrated probabilities per category and availability.

The head's logit for a post is a sum of parts: text, image, text x image interaction, and a bias for the
availability. Calibration fits, on the validation set and separately for each modality-availability subset
(both / text only / image only / none), ``p = sigmoid(w . parts + b)``: Platt scaling with one slope per part.
With one part this is classic Platt scaling; with several it also learns, on data the head never trained on, how
much each part deserves, so a branch that memorised its training photos cannot add noise to a category it does
not inform, and a part that does not earn its parameter (BIC) is dropped. Targets are smoothed as in Platt
(1999), so perfectly separated validation data still gives finite slopes, and a light ridge keeps collinear parts
stable.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
_RIDGE = 1e-3


def sigmoid(z: FloatArray) -> FloatArray:
    """``1 / (1 + exp(-z))`` without overflow."""
    e = np.exp(-np.abs(z))
    out: FloatArray = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return out


def _loss(design: FloatArray, theta: FloatArray, target: FloatArray, penalty: FloatArray) -> float:
    z = design @ theta
    # log(1 + exp(z)) - target * z, computed stably, plus the ridge term.
    return float(np.sum(np.logaddexp(0.0, z) - target * z) + 0.5 * theta @ penalty @ theta)


def _newton(design: FloatArray, target: FloatArray, start: FloatArray, iterations: int) -> tuple[FloatArray, float]:
    """Minimise the ridge-penalised log-loss from ``start`` (Newton with step halving); returns theta and loss."""
    theta = start
    penalty = _RIDGE * np.eye(theta.size)
    penalty[-1, -1] = 0.0
    loss = _loss(design, theta, target, penalty)
    for _ in range(iterations):
        p = sigmoid(design @ theta)
        gradient = design.T @ (p - target) + penalty @ theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + penalty + 1e-9 * np.eye(theta.size)
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while size > 1e-6:
            candidate = theta - size * step
            candidate_loss = _loss(design, candidate, target, penalty)
            if candidate_loss <= loss:
                break
            size /= 2
        else:
            break
        theta, improvement, loss = candidate, loss - candidate_loss, candidate_loss
        if improvement < 1e-12 * max(1.0, abs(loss)):
            break
    return theta, loss


def fit_platt(parts: FloatArray, labels: FloatArray, iterations: int = 100) -> tuple[list[float], float]:
    """Slopes (one per column of ``parts``, ``[n, k]``) and intercept minimising the log-loss against
    Platt-smoothed targets.

    A part keeps a slope only if it earns it: parts are dropped one at a time while dropping costs less log-loss
    than the BIC price of a parameter (``log(n) / 2`` nats). A part that carries no signal for the category (an
    image branch's score for a text-decided label, a part absent from this subset) thus gets slope 0 instead of
    a slope fitted to noise, and with no part left the result is the smoothed base rate. Newton's method with step
    halving, on columns scaled to unit spread, converges from any start whatever the scale of the logits.
    """
    x = np.asarray(parts, dtype=np.float64).reshape(len(labels), -1)
    y = np.asarray(labels, dtype=np.float64)
    positives = float(y.sum())
    negatives = float(y.size - positives)
    target = np.where(y > 0.5, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    weights = np.zeros(x.shape[1])
    base = float(np.log((positives + 1) / (negatives + 1)))
    spread = x.std(axis=0) if y.size else np.zeros(x.shape[1])
    active = [int(i) for i in np.nonzero(spread > 1e-9)[0]]
    price = 0.5 * np.log(max(y.size, 2))

    def fit(columns: list[int]) -> tuple[FloatArray, float]:
        design = np.c_[x[:, columns] / spread[columns], np.ones(y.size)]
        return _newton(design, target, np.r_[np.zeros(len(columns)), base], iterations)

    if not active:
        return weights.tolist(), base
    theta, loss = fit(active)
    while active:
        trials = [(fit([c for c in active if c != drop]), drop) for drop in active]
        (best_theta, best_loss), drop = min(trials, key=lambda trial: trial[0][1])
        if best_loss - loss >= price:
            break
        active = [c for c in active if c != drop]
        theta, loss = best_theta, best_loss
    if not active:
        return weights.tolist(), base
    weights[active] = theta[:-1] / spread[active]
    return weights.tolist(), float(theta[-1])


def apply_platt(parts: FloatArray, weights: list[float], bias: float) -> FloatArray:
    """``sigmoid(parts @ weights + bias)`` for ``parts`` of shape ``[n, k]``."""
    x = np.asarray(parts, dtype=np.float64).reshape(-1, len(weights))
    return sigmoid(x @ np.asarray(weights, dtype=np.float64) + bias)
