"""The supervisor's pure parts: children's ports, threads and environment, and the merged exposition."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from moderation.observability.metrics import SupervisorMetrics
from moderation.settings import load_settings
from moderation.supervise import (
    WorkerProcessesFailed,
    child_env,
    child_ports,
    child_torch_threads,
    merge_expositions,
)


def test_children_serve_on_the_ports_above_the_supervisors() -> None:
    assert child_ports(load_settings(metrics_port=9400, worker_processes=3)) == [9401, 9402, 9403]


def test_a_port_too_high_for_the_children_is_refused_with_the_fix() -> None:
    with pytest.raises(WorkerProcessesFailed, match="choose a lower port"):
        child_ports(load_settings(metrics_port=65534, worker_processes=2))


def test_port_zero_gives_each_child_a_free_port() -> None:
    ports = child_ports(load_settings(metrics_port=0, worker_processes=3))
    assert len(set(ports)) == 3 and all(port > 0 for port in ports)


@pytest.mark.parametrize(
    ("overrides", "cores", "expected"),
    [
        ({"device": "cpu", "worker_processes": 2}, 8, 4),  # each child its share of the cores
        ({"device": "cpu", "worker_processes": 4}, 2, 1),  # never below one
        ({"device": "cpu", "worker_processes": 2, "torch_threads": 3}, 8, 3),  # as set
    ],
)
def test_children_split_the_cores_on_a_cpu(overrides: dict[str, object], cores: int, expected: int) -> None:
    assert child_torch_threads(load_settings(**overrides), cores) == expected


def test_child_environment_is_one_worker_on_its_port() -> None:
    settings = load_settings(worker_processes=4, metrics_port=9400, consumer_group="g1", redis_url="redis://:pw@r:6379")
    env = child_env(settings, 9402, 2)
    assert env["MODERATION_WORKER_PROCESSES"] == "1"
    assert env["MODERATION_METRICS_PORT"] == "9402"
    assert env["MODERATION_TORCH_THREADS"] == "2"
    assert env["MODERATION_CONSUMER_GROUP"] == "g1"
    assert env["MODERATION_REDIS_URL"] == "redis://:pw@r:6379"  # the secret itself, not its mask


def child_exposition(consumed: float, seconds: float) -> str:
    registry = CollectorRegistry()
    Counter("moderation_posts_consumed", "Posts consumed.", registry=registry).inc(consumed)
    Histogram("moderation_stage_seconds", "Stage time.", ["stage"], registry=registry).labels("publish").observe(
        seconds
    )
    return generate_latest(registry).decode()


def test_merged_exposition_labels_each_childs_series_and_keeps_the_supervisors() -> None:
    own = SupervisorMetrics()
    own.worker_restarts.labels(worker="1").inc()
    merged = merge_expositions(
        [("0", child_exposition(3, 0.01)), ("1", child_exposition(4, 0.2))], own.registry
    ).decode()
    families = {family.name: family for family in text_string_to_metric_families(merged)}
    assert len(families) == len(list(text_string_to_metric_families(merged)))  # each family once
    consumed = {
        s.labels["worker"]: s.value for s in families["moderation_posts_consumed"].samples if s.name.endswith("_total")
    }
    assert consumed == {"0": 3.0, "1": 4.0}
    counts = {
        s.labels["worker"]: s.value for s in families["moderation_stage_seconds"].samples if s.name.endswith("_count")
    }
    assert counts == {"0": 1.0, "1": 1.0}
    assert families["moderation_stage_seconds"].type == "histogram"
    restarts = [s for s in families["moderation_worker_restarts"].samples if s.name.endswith("_total")]
    assert [(s.labels, s.value) for s in restarts] == [({"worker": "1"}, 1.0)]


def test_merged_exposition_of_no_children_is_the_supervisors_alone() -> None:
    own = SupervisorMetrics().registry
    names = {family.name for family in text_string_to_metric_families(merge_expositions([], own).decode())}
    assert names == {"moderation_worker_restarts"}
