"""Threshold proposals hit their targets and the policy file loads with the worker's policy model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from moderation.decide.policy import PolicyDocument
from moderation.decide.thresholds import (
    NEVER,
    lowest_threshold_at_precision,
    parse_per_day,
    policy_document,
    propose,
    review_threshold_at_band_precision,
    review_threshold_for_rate,
    write_policy,
)
from moderation.errors import ConfigError


def _scores(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(2000) < 0.2).astype(float)
    scores = np.clip(labels * 0.5 + rng.random(2000) * 0.6, 0, 1)
    return scores, labels


def test_block_threshold_is_lowest_reaching_precision() -> None:
    scores, labels = _scores()
    threshold, precision, recall = lowest_threshold_at_precision(scores, labels, 0.95)
    flagged = scores >= threshold
    assert labels[flagged].mean() >= 0.95 and precision >= 0.95 and 0 < recall <= 1
    lower = scores[scores < threshold].max()
    assert labels[scores >= lower].mean() < 0.95 or lower == threshold


def test_unreachable_precision_never_fires() -> None:
    assert lowest_threshold_at_precision(np.full(10, 0.5), np.r_[np.ones(5), np.zeros(5)], 0.9)[0] == NEVER


def test_review_band_keeps_its_own_precision() -> None:
    scores, labels = _scores(4)
    block = lowest_threshold_at_precision(scores, labels, 0.95)[0]
    review = review_threshold_at_band_precision(scores, labels, block, 0.15)
    band = (scores >= review) & (scores < block)
    assert review < block and labels[band].mean() >= 0.15
    assert review_threshold_at_band_precision(scores, labels, block, 0.99) == block  # no band that clean
    assert review_threshold_at_band_precision(scores, labels, 0.0, 0.5) == 0.0  # empty band: no review


def test_review_threshold_respects_the_rate() -> None:
    scores, _ = _scores(1)
    review = review_threshold_for_rate(scores, block=0.9, rate=0.05)
    assert np.mean((scores >= review) & (scores < 0.9)) <= 0.05
    assert review < 0.9


def test_capacity_is_shared_by_enforced_categories_only() -> None:
    scores, labels = _scores(2)
    proposals = propose(
        {"spam": scores, "hate": scores},
        {"spam": labels, "hate": labels},
        {"spam": "enforce", "hate": "observe", "sexual": "observe"},
        precision=0.95,
        review_capacity=1000,
        traffic=100_000,
    )
    by_name = {p.category: p for p in proposals}
    assert by_name["spam"].review_rate <= 0.01
    assert by_name["sexual"].block == NEVER and by_name["sexual"].mode == "observe"
    with pytest.raises(ConfigError):
        propose({}, {}, {}, precision=0.9, review_capacity=10)


def test_policy_file_loads_as_worker_policy(tmp_path: Path) -> None:
    scores, labels = _scores(3)
    proposals = propose({"spam": scores}, {"spam": labels}, {"spam": "enforce", "hate": "observe"}, precision=0.95)
    document = policy_document(proposals, version="2026-11-27.1", model_version="m-1")
    write_policy(tmp_path / "policy.yaml", document, proposals, "unit test")
    text = (tmp_path / "policy.yaml").read_text()
    assert text.startswith("# Proposed by `moderation thresholds`")
    loaded = PolicyDocument(**yaml.safe_load(text))
    assert loaded.version == "2026-11-27.1" and loaded.model_version == "m-1"
    assert loaded.categories["spam"].mode == "enforce" and loaded.categories["hate"].mode == "observe"
    assert loaded.categories["spam"].review <= loaded.categories["spam"].block


def test_parse_per_day() -> None:
    assert parse_per_day("2,000/day") == 2000.0 and parse_per_day("50") == 50.0
    with pytest.raises(ConfigError):
        parse_per_day("lots")


def test_thresholds_stay_above_the_no_evidence_score() -> None:
    """Image-only posts of a text-only signal all score the base rate: they must not all go to review."""
    rng = np.random.default_rng(0)
    labels = (rng.random(2000) < 0.15).astype(float)
    scores = np.clip(labels * 0.6 + rng.random(2000) * 0.4, 0, 1)
    free = propose(
        {"spam": scores}, {"spam": labels}, {"spam": "enforce"}, precision=0.95, review_capacity=400.0, traffic=1000.0
    )[0]
    floored = propose(
        {"spam": scores},
        {"spam": labels},
        {"spam": "enforce"},
        precision=0.95,
        review_capacity=400.0,
        traffic=1000.0,
        floors={"spam": 0.5},
    )[0]
    assert free.review < 0.5 < floored.review <= floored.block
    assert free.block < 0.5  # a block threshold under the no-evidence score would block every such post
    assert "no-evidence score" in floored.note
