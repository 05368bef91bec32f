"""The policy: per-category scores to per-category decisions and one overall action.

A policy is a versioned YAML file (the one ``moderation thresholds`` writes)::

    version: "2026-11-27.1"
    categories:
      spam: {mode: enforce, block: 0.95, review: 0.7}
      hate: {mode: observe, block: 0.9, review: 0.6}     # observe: scores published, action forced to allow
    tenants:
      forum-eu: {categories: {spam: {block: 0.99}}}        # per-tenant overrides, field by field

Every threshold that fires becomes a reason naming the category, score, threshold and rule; observe-only
categories record the action they would have taken. :class:`PolicySource` re-reads the file when it changes, so
a policy change needs no restart, and keeps the last good policy when a new file is broken.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moderation.errors import ConfigError
from moderation.types import Action

log = logging.getLogger(__name__)

Mode = Literal["enforce", "observe"]


class CategoryRule(BaseModel):
    """Thresholds of one category; ``review`` must not exceed ``block``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Mode = "observe"
    block: float = Field(1.0, ge=0.0, le=1.0)
    review: float = Field(1.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> CategoryRule:
        if self.review > self.block:
            raise ValueError(f"review threshold {self.review} is above block threshold {self.block}")
        return self


class TenantOverride(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    categories: dict[str, dict[str, Any]] = Field(default_factory=dict)


class PolicyDocument(BaseModel):
    """The YAML file's shape."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(min_length=1, max_length=128)
    model_version: str | None = None
    default: dict[str, Any] = Field(default_factory=dict)
    categories: dict[str, CategoryRule]
    tenants: dict[str, TenantOverride] = Field(default_factory=dict)


@dataclass(frozen=True)
class Reason:
    code: str
    category: str
    score: float
    threshold: float
    rule: str

    def as_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "category": self.category,
            "score": self.score,
            "threshold": self.threshold,
            "rule": self.rule,
        }


@dataclass(frozen=True)
class CategoryDecision:
    score: float
    decision: Action
    mode: Mode
    would_be_action: Action | None


@dataclass(frozen=True)
class Decision:
    """The policy's answer for one post."""

    action: Action
    categories: dict[str, CategoryDecision]
    reasons: tuple[Reason, ...] = field(default=())


@dataclass(frozen=True)
class Policy:
    """A loaded, validated policy."""

    document: PolicyDocument
    #: rules resolved so far, by tenant with overrides (None for every other tenant) and category: bounded by the
    #: policy's size, and saves building and merging a rule model for every category of every post
    _rules: dict[tuple[str | None, str], tuple[CategoryRule, str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def version(self) -> str:
        return self.document.version

    def rule_for(self, tenant: str, category: str) -> tuple[CategoryRule, str]:
        """The category's rule for a tenant, and the rule id prefix (tenant overrides are named as such)."""
        key = (tenant if tenant in self.document.tenants else None, category)
        rule = self._rules.get(key)
        if rule is None:
            rule = self._rules[key] = self._resolve(key[0], category)
        return rule

    def _resolve(self, tenant: str | None, category: str) -> tuple[CategoryRule, str]:
        base = self.document.categories.get(category, CategoryRule())
        override = self.document.tenants[tenant] if tenant is not None else None  # rule_for passes only known ones
        if override is not None and category in override.categories:
            merged = CategoryRule(**{**base.model_dump(), **override.categories[category]})
            return merged, f"tenants.{tenant}.{category}"
        return base, category

    def decide(self, tenant: str, scores: Mapping[str, float]) -> Decision:
        """Per-category decisions and reasons, and the most severe enforced decision as the action."""
        categories: dict[str, CategoryDecision] = {}
        reasons: list[Reason] = []
        action = Action.ALLOW
        for category, score in scores.items():
            rule, rule_id = self.rule_for(tenant, category)
            fired = _fired(score, rule)
            if fired is None:
                categories[category] = CategoryDecision(
                    score, Action.ALLOW, rule.mode, Action.ALLOW if rule.mode == "observe" else None
                )
                continue
            outcome, threshold = fired
            if rule.mode == "observe":
                categories[category] = CategoryDecision(score, Action.ALLOW, "observe", outcome)
                reasons.append(
                    Reason(
                        f"observe_only_would_{outcome.value}", category, score, threshold, f"{rule_id}.{outcome.value}"
                    )
                )
            else:
                categories[category] = CategoryDecision(score, outcome, "enforce", None)
                reasons.append(
                    Reason(
                        f"score_at_or_above_{outcome.value}_threshold",
                        category,
                        score,
                        threshold,
                        f"{rule_id}.{outcome.value}",
                    )
                )
                if outcome.severity > action.severity:
                    action = outcome
        return Decision(action=action, categories=categories, reasons=tuple(reasons))


def _fired(score: float, rule: CategoryRule) -> tuple[Action, float] | None:
    if score >= rule.block:
        return Action.BLOCK, rule.block
    if score >= rule.review:
        return Action.REVIEW, rule.review
    return None


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file; errors name the file and what is wrong in it."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc}; set MODERATION_POLICY_FILE") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy file {path} is not valid YAML: {exc}") from exc
    try:
        return Policy(PolicyDocument.model_validate(raw))
    except ValidationError as exc:
        raise ConfigError(f"policy file {path} is invalid: {exc}") from exc


class PolicySource:
    """The current policy, re-read when its file changes (checked at most every ``interval_s``)."""

    def __init__(self, path: Path, interval_s: float = 1.0) -> None:
        self.path = path
        self.interval_s = interval_s
        self._policy = load_policy(path)
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()

    def _file_stamp(self) -> tuple[int, int]:
        stat = self.path.stat()
        return (stat.st_mtime_ns, stat.st_size)

    def current(self) -> Policy:
        """The policy in force; a changed file is loaded, a broken one is logged and the old policy kept."""
        now = time.monotonic()
        if now - self._checked < self.interval_s:
            return self._policy
        self._checked = now
        try:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                self._policy = load_policy(self.path)
                log.info("policy reloaded", extra={"policy_version": self._policy.version, "path": str(self.path)})
        except (OSError, ConfigError) as exc:
            log.error("policy file change ignored, keeping version %s: %s", self._policy.version, exc)
        return self._policy
