"""The alert rules and the dashboard parse, and use only metrics the registry declares."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from moderation.observability.metrics import Metrics, SupervisorMetrics

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
METRIC = re.compile(r"\bmoderation_[a-z0-9_]+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",), "info": ("_info",)}


def exposed_names() -> set[str]:
    names: set[str] = set()
    for family in [*Metrics().registry.collect(), *SupervisorMetrics().registry.collect()]:
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def test_alert_rules_parse_and_use_declared_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert {"ModerationConsumerLagHigh", "ModerationDeadLetterRateHigh", "ModerationNoProgress"} <= {
        rule["alert"] for group in rules["groups"] for rule in group["rules"]
    }
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used and used <= exposed_names(), used - exposed_names()


def test_dashboard_uses_declared_metrics_and_covers_the_essentials() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "moderation.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used <= exposed_names(), used - exposed_names()
    for needed in (
        "moderation_end_to_end_seconds_bucket",
        "moderation_consumer_lag_seconds",
        "moderation_dead_letters_total",
        "moderation_category_decisions_total",
        "moderation_gpu_memory_bytes",
    ):
        assert needed in used


def test_metrics_never_label_by_identity() -> None:
    allowed = {
        "action",
        "category",
        "decision",
        "mode",
        "reason",
        "kind",
        "result",
        "modality",
        "stage",
        "encoder",
        "partition",
        "list",  # known-bad hash-list names: operator-defined and few
        "worker",  # a supervised worker process's index, below MODERATION_WORKER_PROCESSES
    }
    metrics = [m for m in [*vars(Metrics()).values(), *vars(SupervisorMetrics()).values()] if hasattr(m, "_labelnames")]
    assert len(metrics) > 10
    for metric in metrics:
        assert set(metric._labelnames) <= allowed, metric
