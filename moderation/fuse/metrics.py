"""Ranking and calibration metrics with percentile-bootstrap confidence intervals.

Bootstrap resamples are drawn once as a ``[resamples, n]`` matrix of counts (multinomial weights), and every metric
is computed for all resamples at once from one sort of the scores. Paired comparisons (model A minus model B on
the same posts) reuse the same weights, which is what makes the interval of a difference meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
CONFIDENCE = 0.95


def bootstrap_weights(n: int, resamples: int, seed: int) -> FloatArray:
    """``[resamples, n]`` counts: how often each item is drawn in each resample (row 0 is the data itself)."""
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
    weights[0] = 1.0
    return weights


def _tie_groups(sorted_scores: FloatArray) -> npt.NDArray[np.intp]:
    """For scores sorted ascending, the index of the last member of each item's tie group."""
    last = np.r_[np.nonzero(np.diff(sorted_scores))[0], sorted_scores.size - 1]
    return np.asarray(last[np.searchsorted(last, np.arange(sorted_scores.size))], dtype=np.intp)


def weighted_auroc(scores: FloatArray, labels: FloatArray, weights: FloatArray) -> FloatArray:
    """AUROC for each row of ``weights`` (ties count one half), NaN where a resample lacks a class."""
    order = np.argsort(scores, kind="stable")
    s, y, w = scores[order], labels[order] > 0.5, weights[:, order]
    pos, neg = w * y, w * ~y
    last = _tie_groups(s)
    first = np.r_[0, np.nonzero(np.diff(s))[0] + 1]
    first_of = first[np.searchsorted(first, np.arange(s.size), side="right") - 1]
    cum_neg = np.cumsum(neg, axis=1)
    below = np.where(first_of > 0, cum_neg[:, np.maximum(first_of - 1, 0)], 0.0)
    tied = cum_neg[:, last] - below
    wins = (pos * (below + 0.5 * tied)).sum(axis=1)
    total = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, wins / total, np.nan)


def weighted_average_precision(scores: FloatArray, labels: FloatArray, weights: FloatArray) -> FloatArray:
    """Average precision (step-wise, as scikit-learn computes it) for each row of ``weights``."""
    order = np.argsort(-scores, kind="stable")
    s, y, w = -scores[order], labels[order] > 0.5, weights[:, order]
    tp, allw = np.cumsum(w * y, axis=1), np.cumsum(w, axis=1)
    last = _tie_groups(s)
    tp_at, all_at = tp[:, last], allw[:, last]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(all_at > 0, tp_at / all_at, 0.0)
        positives = tp[:, -1]
        # Each positive contributes the precision at its threshold (its tie group's end), weighted by its count.
        ap = (w * y * precision).sum(axis=1) / positives
    return np.where(positives > 0, ap, np.nan)


def expected_calibration_error(probs: FloatArray, labels: FloatArray, bins: int = 15) -> float:
    """ECE with ``bins`` equal-width bins: the bin-size-weighted mean of |mean label - mean probability|."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels, np.float64)
    if probs.size == 0:
        return float("nan")
    index = np.minimum((probs * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.sum() * abs(labels[members].mean() - probs[members].mean())
    return total / probs.size


def reliability_curve(
    probs: FloatArray, labels: FloatArray, bins: int = 10
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per non-empty bin: mean probability, observed frequency, and count (for reliability diagrams)."""
    index = np.minimum((np.asarray(probs) * bins).astype(int), bins - 1)
    mean_p, freq, count = [], [], []
    for b in range(bins):
        members = index == b
        if members.any():
            mean_p.append(float(np.mean(probs[members])))
            freq.append(float(np.mean(labels[members])))
            count.append(float(members.sum()))
    return np.array(mean_p), np.array(freq), np.array(count)


@dataclass(frozen=True)
class Estimate:
    """A metric on the data and its percentile-bootstrap interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        if np.isnan(self.value):
            return "n/a"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"

    @classmethod
    def from_samples(cls, samples: FloatArray) -> Estimate:
        """Row 0 is the estimate on the data, the rest are resamples."""
        rest = samples[1:][~np.isnan(samples[1:])]
        if np.isnan(samples[0]) or rest.size == 0:
            return cls(float(samples[0]), float("nan"), float("nan"))
        tail = (1 - CONFIDENCE) / 2 * 100
        low, high = np.percentile(rest, [tail, 100 - tail])
        return cls(float(samples[0]), float(low), float(high))


def roc_points(scores: FloatArray, labels: FloatArray) -> tuple[FloatArray, FloatArray]:
    """False- and true-positive rates at every distinct threshold (for ROC plots)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order] > 0.5
    ends = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp, fp = np.cumsum(y)[ends], np.cumsum(~y)[ends]
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]
