"""The stream worker end to end on the real broker and cache: every shape of post, replays, crashes."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from moderation.contracts import SchemaName, validate
from moderation.demo.process import WorkerProcess, free_port
from moderation.demo.run import Outcome, collect
from moderation.demo.samples import SampleStream, build_sample_stream, stores
from moderation.ingest.cli import produce_messages
from moderation.settings import Settings, load_settings
from tests.conftest import Stack

pytestmark = pytest.mark.integration

DECISION_EXCLUDED = {"timings", "published_at"}


@pytest.fixture
def settings(stack: Stack, model_dir: Path) -> Settings:
    return stack.unique_topics(
        model_dir=model_dir,
        stores={name: str(path) for name, path in stores().items()},
        metrics_port=free_port(),
        batch_max_size=16,
        batch_max_wait_ms=20,
    )


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.kill()


def start_worker(settings: Settings, workers: list[WorkerProcess], log: Path, **overrides: object) -> WorkerProcess:
    worker_settings = load_settings(**{**settings.model_dump(), **overrides}) if overrides else settings
    worker = WorkerProcess(worker_settings, log).start()
    workers.append(worker)
    worker.wait_ready()
    return worker


def read_all(settings: Settings, topic: str) -> list[dict[str, object]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
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
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
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


def test_posts_of_every_shape_get_exactly_one_valid_outcome_and_replays_change_nothing(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    stream = build_sample_stream(90, seed=3, run_id="e2e")
    assert set(stream.shapes) == {"text", "image", "both", "neither", "several_images", "malformed"}
    worker = start_worker(settings, workers, tmp_path / "worker.log")
    produce_messages(settings, stream.messages, settings.topic_posts)
    first = collect(settings, stream, 0.0)
    assert_every_post_accounted_for(stream, first)
    assert first.duplicates == 0

    verdicts = read_all(settings, settings.topic_verdicts)
    dead_letters = read_all(settings, settings.topic_dead_letter)
    reviews = read_all(settings, settings.topic_review)
    assert len(verdicts) == stream.valid_posts and len(dead_letters) == len(stream.expected_rejections)
    for document in verdicts + reviews:
        validate(SchemaName.VERDICT, document)
    for document in dead_letters:
        validate(SchemaName.DEAD_LETTER, document)
    assert all(r["action"] == "review" for r in reviews)
    assert len(reviews) == sum(1 for v in verdicts if v["action"] == "review")
    assert any(v["modalities_present"] == [] for v in verdicts)
    assert any(len(v["modalities_present"]) == 2 for v in verdicts)

    encoded_before = encoded_items(worker.scrape())
    produce_messages(settings, stream.messages, settings.topic_posts)
    wait_for_messages(settings, settings.topic_verdicts, 2 * stream.valid_posts)
    replayed = read_all(settings, settings.topic_verdicts)
    assert len(replayed) == 2 * stream.valid_posts
    by_post: dict[str, list[dict[str, object]]] = {}
    for verdict in replayed:
        by_post.setdefault(str(verdict["post_id"]), []).append(decision(verdict))
    assert all(first_copy == second_copy for first_copy, second_copy in by_post.values())
    metrics_text = worker.scrape()
    assert encoded_items(metrics_text) == encoded_before, "the replay encoded something again"
    assert re.search(r'moderation_cache_lookups_total\{kind="verdict",result="hit"\} (\d+)', metrics_text)
    assert len(read_all(settings, settings.topic_review)) == len(reviews), "a replay duplicated moderator work"
    assert worker.stop() == 0
    assert_committed_to_end(settings)


@pytest.mark.parametrize("seed", [11, 23])
def test_a_worker_killed_at_seeded_points_and_restarted_loses_nothing(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    stream = build_sample_stream(
        160, seed=seed, run_id=f"crash{seed}", shapes=(("text", 0.85), ("neither", 0.05), ("malformed", 0.10))
    )
    # First life: dies between publishing a batch and committing it.
    kill_batch = rng.randint(2, 4)
    start_worker(settings, workers, tmp_path / "life1.log", debug_kill_before_commit_batch=kill_batch)
    produce_messages(settings, stream.messages, settings.topic_posts)
    assert workers[-1].process is not None and workers[-1].process.wait(timeout=120) == -9
    # Second life: SIGKILLed from outside after a seeded number of acknowledged verdicts.
    seen_before = len(read_all(settings, settings.topic_verdicts))
    second = start_worker(settings, workers, tmp_path / "life2.log")
    wait_for_messages(settings, settings.topic_verdicts, seen_before + rng.randint(5, 30))
    second.kill()
    # Third life runs to the end.
    third = start_worker(settings, workers, tmp_path / "life3.log")
    outcome = collect(settings, stream, 0.0)
    assert_every_post_accounted_for(stream, outcome)
    verdicts = read_all(settings, settings.topic_verdicts)
    first_decision: dict[str, dict[str, object]] = {}
    for verdict in verdicts:
        first_decision.setdefault(str(verdict["post_id"]), decision(verdict))
        assert decision(verdict) == first_decision[str(verdict["post_id"])], "contradictory verdicts"
    assert third.stop() == 0
    assert_committed_to_end(settings)
