"""Threshold proposals from validation scores, written as a policy file (the shape ``decide/policy.py`` reads).

Per category:

* ``block``: the lowest score at which posts scoring at or above it reach the target precision on validation
  (the most recall that precision allows); 1.0 (never) when no threshold reaches it;
* ``review``: either the lowest score at which the review band (between it and ``block``) keeps a lower review
  precision, or, given a review capacity and a traffic estimate, the lowest score that keeps the expected review
  volume within capacity (the capacity is shared equally by the enforced categories; observed categories never
  send posts to review);
* ``mode``: ``enforce`` only for categories whose signal is validated; everything else is ``observe``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import yaml

from moderation.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
NEVER = 1.0
_RATE = re.compile(r"^\s*([0-9][0-9_,.]*)\s*(?:/\s*(day|d))?\s*$")


@dataclass(frozen=True)
class Proposal:
    """Thresholds for one category and what they achieved on the validation data."""

    category: str
    mode: str
    block: float
    review: float
    block_precision: float
    block_recall: float
    review_rate: float  # share of validation posts in [review, block)
    note: str = ""


def parse_per_day(text: str) -> float:
    """``"2000/day"``, ``"2,000"`` or ``"2000"`` -> 2000.0 (per day)."""
    match = _RATE.match(text)
    if not match:
        raise ConfigError(f"expected a count per day such as '2000/day', got {text!r}")
    return float(match.group(1).replace(",", "").replace("_", ""))


def _operating_points(scores: FloatArray, labels: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Distinct thresholds (descending) with the precision and recall of ``score >= threshold``."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order] > 0.5
    ends = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[ends].astype(np.float64)
    flagged = (ends + 1).astype(np.float64)
    positives = max(float(y.sum()), 1.0)
    return s[ends], tp / flagged, tp / positives


def lowest_threshold_at_precision(
    scores: FloatArray, labels: FloatArray, precision: float
) -> tuple[float, float, float]:
    """``(threshold, precision, recall)`` of the lowest threshold whose precision reaches ``precision``."""
    thresholds, precisions, recalls = _operating_points(scores, labels)
    ok = np.nonzero(precisions >= precision)[0]
    if ok.size == 0:
        return NEVER, float("nan"), 0.0
    best = ok[-1]
    return float(thresholds[best]), float(precisions[best]), float(recalls[best])


def review_threshold_at_band_precision(scores: FloatArray, labels: FloatArray, block: float, precision: float) -> float:
    """The lowest threshold below ``block`` at which the review band ``[threshold, block)`` still has at least
    ``precision`` (the band's own precision: posts above ``block`` are blocked, not reviewed); ``block`` if none."""
    band = scores < block
    if not band.any():
        return block
    thresholds, precisions, _ = _operating_points(scores[band], labels[band])
    ok = np.nonzero(precisions >= precision)[0]
    return float(thresholds[ok[-1]]) if ok.size else block


def review_threshold_for_rate(scores: FloatArray, block: float, rate: float) -> float:
    """The lowest threshold below ``block`` that puts at most ``rate`` of the posts in ``[threshold, block)``."""
    below = np.sort(scores[scores < block])[::-1]
    allowed = int(np.floor(rate * scores.size))
    if allowed <= 0 or below.size == 0:
        return block
    if allowed >= below.size:
        return float(below[-1])
    candidate = float(below[allowed - 1])
    # Ties at the candidate would overshoot the budget: step up to the next distinct score.
    if float(below[allowed]) == candidate:
        higher = below[below > candidate]
        return float(higher[-1]) if higher.size else block
    return candidate


# Above a no-evidence score by more than float noise between batches (scores are published to 6 digits).
NO_EVIDENCE_MARGIN = 1e-6


def propose(
    scores: Mapping[str, FloatArray],
    labels: Mapping[str, FloatArray],
    modes: Mapping[str, str],
    *,
    precision: float,
    review_precision: float = 0.5,
    review_capacity: float | None = None,
    traffic: float | None = None,
    floors: Mapping[str, float] | None = None,
) -> list[Proposal]:
    """Proposals for every category in ``modes``; categories without scores (no model) never fire.

    ``floors`` gives, per category, the score the model answers when it has no evidence (a constant for every post
    of some availability, e.g. image-only posts for a text-only signal): thresholds are kept above it, or every
    such post would be reviewed or blocked on its base rate alone.
    """
    if not 0 < precision <= 1 or not 0 < review_precision <= 1:
        raise ConfigError("precision targets must lie in (0, 1]")
    if (review_capacity is None) != (traffic is None):
        raise ConfigError("--review-capacity needs --traffic (posts per day), and the other way round")
    enforced = [c for c, m in modes.items() if m == "enforce" and c in scores]
    rate = None
    if review_capacity is not None and traffic is not None:
        if traffic <= 0:
            raise ConfigError("--traffic must be a positive number of posts per day")
        rate = review_capacity / traffic / max(len(enforced), 1)
    proposals = []
    for category, mode in modes.items():
        if category not in scores:
            proposals.append(Proposal(category, "observe", NEVER, NEVER, float("nan"), 0.0, 0.0, "no model signal"))
            continue
        s, y = np.asarray(scores[category], np.float64), np.asarray(labels[category], np.float64)
        block, achieved, recall = lowest_threshold_at_precision(s, y, precision)
        if rate is not None:
            review = review_threshold_for_rate(s, block, rate)
            note = f"review sized to {rate:.4%} of traffic"
        else:
            review = review_threshold_at_band_precision(s, y, block, review_precision)
            note = f"review band precision >= {review_precision:g}"
        floor = (floors or {}).get(category)
        if floor is not None and review <= floor:
            block = max(block, floor + NO_EVIDENCE_MARGIN)
            review = max(review, floor + NO_EVIDENCE_MARGIN)
            note = f"{note}; kept above the no-evidence score {floor:.4f}"
        if block == NEVER:
            note = f"no threshold reaches precision {precision:g}; {note}"
        in_review = float(np.mean((s >= review) & (s < block))) if s.size else 0.0
        proposals.append(Proposal(category, mode, block, review, achieved, recall, in_review, note))
    return proposals


def policy_document(proposals: Sequence[Proposal], *, version: str | None, model_version: str) -> dict[str, object]:
    """The policy YAML as a mapping: version, model version, one rule per category."""
    return {
        "version": version or f"{datetime.date.today().isoformat()}.1",
        "model_version": model_version,
        "default": {},
        "categories": {p.category: {"mode": p.mode, "block": p.block, "review": p.review} for p in proposals},
        "tenants": {},
    }


def write_policy(path: Path, document: Mapping[str, object], proposals: Sequence[Proposal], source: str) -> None:
    """Write the policy with a comment header saying where each threshold came from."""
    header = [
        f"# Proposed by `moderation thresholds` from {source}.",
        "# category: block precision / recall on "
        "validation, share of validation posts sent to review; mode enforce only where the signal is validated.",
    ]
    for p in proposals:
        detail = (
            f"precision {p.block_precision:.3f}, recall {p.block_recall:.3f}, review {p.review_rate:.2%}"
            if p.block_precision == p.block_precision
            else "never fires"
        )
        header.append(f"#   {p.category}: {p.mode}; {detail}" + (f" ({p.note})" if p.note else ""))
    body = yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header) + "\n" + body)
