"""Helpers shared by the integration and reliability tests: worker processes and reading topics back."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from moderation.demo.process import WorkerProcess
from moderation.demo.run import Outcome
from moderation.demo.samples import SampleStream
from moderation.ingest.connection import reader_options
from moderation.observability.server import free_port
from moderation.settings import Settings, load_settings

DECISION_EXCLUDED = {"timings", "published_at"}


def start_worker(
    settings: Settings, workers: list[WorkerProcess], log: Path, *, wait: bool = True, **overrides: object
) -> WorkerProcess:
    """A worker subprocess on its own metrics port, killed at the end of the test; waits until ready."""
    worker_settings = load_settings(**{**settings.model_dump(), "metrics_port": free_port(), **overrides})
    worker = WorkerProcess(worker_settings, log).start()
    workers.append(worker)
    if wait:
        worker.wait_ready()
    return worker


def read_all(settings: Settings, topic: str) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        **reader_options(settings),
        consumer_timeout_ms=3000,
    )
    try:
        return [json.loads(record.value) for record in consumer]
    finally:
        consumer.close()


def wait_for_messages(settings: Settings, topic: str, count: int, timeout_s: float = 180.0) -> None:
    """Block until ``topic`` holds at least ``count`` messages."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        **reader_options(settings),
    )
    seen, deadline = 0, time.monotonic() + timeout_s
    try:
        while seen < count and time.monotonic() < deadline:
            seen += sum(len(records) for records in consumer.poll(timeout_ms=200).values())
    finally:
        consumer.close()
    assert seen >= count, f"only {seen} of {count} messages on {topic} within {timeout_s:.0f} s"


def decision(verdict: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in verdict.items() if k not in DECISION_EXCLUDED}


def assert_committed_to_end(settings: Settings) -> None:
    """The group's committed offset is one past the last record on every partition of the posts topic.

    The end is found by reading each partition, not by ListOffsets: the embedded Tansu broker (0.6.0) answers
    ListOffsets(latest) with the base offset of the last record batch plus one, short of the real end when that
    batch holds several records.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
        auto_offset_reset="earliest",
    )
    try:
        partitions = [
            TopicPartition(settings.topic_posts, p) for p in consumer.partitions_for_topic(settings.topic_posts) or ()
        ]
        committed = {tp.partition: consumer.committed(tp) or 0 for tp in partitions}
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = dict.fromkeys(committed, 0)
        for record in consumer:
            ends[record.partition] = max(ends[record.partition], record.offset + 1)
    finally:
        consumer.close()
    assert committed == ends


def encoded_items(metrics_text: str) -> float:
    return sum(float(m) for m in re.findall(r"^moderation_encoded_items_total\{[^}]*\} (\S+)$", metrics_text, re.M))


def assert_every_post_accounted_for(stream: SampleStream, outcome: Outcome) -> None:
    keys = {key.decode() for key, _ in stream.messages}
    assert set(outcome.verdicts) | set(outcome.dead_letters) == keys
    assert not set(outcome.verdicts) & set(outcome.dead_letters)
    assert {k: d["reason"] for k, d in outcome.dead_letters.items()} == {
        k: r.value for k, r in stream.expected_rejections.items()
    }


def wait_until(predicate: Callable[[], object], timeout_s: float, poll_s: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout_s`` passed (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return False
