"""Policy: thresholds, observe-only mode, tenant overrides, reasons, hot reload."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from moderation.decide.policy import PolicySource, load_policy
from moderation.errors import ConfigError
from moderation.types import Action

POLICY = """
version: "v1"
categories:
  spam: {mode: enforce, block: 0.9, review: 0.6}
  hate: {mode: observe, block: 0.8, review: 0.5}
tenants:
  strict: {categories: {spam: {block: 0.7}}}
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def test_enforced_thresholds_decide_the_action_and_name_the_rule(policy_file: Path) -> None:
    policy = load_policy(policy_file)
    decision = policy.decide("acme", {"spam": 0.95, "hate": 0.1})
    assert decision.action is Action.BLOCK
    assert decision.categories["spam"].decision is Action.BLOCK
    (reason,) = decision.reasons
    assert (reason.code, reason.category, reason.score, reason.threshold, reason.rule) == (
        "score_at_or_above_block_threshold",
        "spam",
        0.95,
        0.9,
        "spam.block",
    )
    assert policy.decide("acme", {"spam": 0.7, "hate": 0.0}).action is Action.REVIEW
    assert policy.decide("acme", {"spam": 0.1, "hate": 0.0}).action is Action.ALLOW


def test_observe_only_records_the_would_be_action_but_allows(policy_file: Path) -> None:
    decision = load_policy(policy_file).decide("acme", {"spam": 0.0, "hate": 0.99})
    assert decision.action is Action.ALLOW
    hate = decision.categories["hate"]
    assert (hate.decision, hate.mode, hate.would_be_action) == (Action.ALLOW, "observe", Action.BLOCK)
    assert [r.code for r in decision.reasons] == ["observe_only_would_block"]


def test_tenant_override_changes_only_that_tenant(policy_file: Path) -> None:
    policy = load_policy(policy_file)
    assert policy.decide("acme", {"spam": 0.75}).action is Action.REVIEW
    strict = policy.decide("strict", {"spam": 0.75})
    assert strict.action is Action.BLOCK
    assert strict.reasons[0].rule == "tenants.strict.spam.block"


def test_categories_missing_from_the_policy_are_observed(policy_file: Path) -> None:
    decision = load_policy(policy_file).decide("acme", {"self_harm": 1.0})
    assert decision.action is Action.ALLOW and decision.categories["self_harm"].mode == "observe"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("version: v\ncategories: {spam: {mode: enforce, block: 0.5, review: 0.9}}", "review threshold"),
        ("version: v\ncategories: {spam: {mode: loud}}", "mode"),
        ("categories: {}", "version"),
        ("version: [", "not valid YAML"),
    ],
)
def test_broken_policy_files_name_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_policy(path)


def test_a_changed_file_is_picked_up_and_a_broken_one_ignored(policy_file: Path) -> None:
    source = PolicySource(policy_file, interval_s=0.0)
    assert source.current().version == "v1"
    policy_file.write_text(POLICY.replace('"v1"', '"v2"'))
    os.utime(policy_file, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert source.current().version == "v2"
    policy_file.write_text("version: [")
    os.utime(policy_file, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert source.current().version == "v2"
