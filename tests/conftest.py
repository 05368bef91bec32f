"""Shared fixtures: the real broker and cache, started once per test session.

With ``MODERATION_KAFKA_BOOTSTRAP`` and ``MODERATION_REDIS_URL`` set, the tests use those servers (Apache Kafka,
Redis elsewhere); otherwise they start the embedded stack on free loopback ports in a temporary state folder, so a
stack the developer started with ``moderation up`` is never touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from moderation.demo.process import WorkerProcess
from moderation.settings import Settings, load_settings

# Short group timeouts: a consumer joins in seconds instead of half a minute.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 10000}


@dataclass(frozen=True)
class Stack:
    """Addresses of the broker and cache under test, and settings that point at them."""

    kafka_bootstrap: str
    redis_url: str
    settings: Settings

    def unique_topics(self, **overrides: object) -> Settings:
        """Settings whose five topics are new and unique to the caller, created on the broker."""
        return unique_topics(self.settings, **overrides)


def unique_topics(settings: Settings, **overrides: object) -> Settings:
    """``settings`` with five new topics and a new consumer group, unique to the caller, created on the broker."""
    from moderation.embedded.stack import ensure_topics

    suffix = uuid.uuid4().hex[:8]
    fresh = load_settings(
        **{
            **settings.model_dump(),
            "topic_posts": f"posts-{suffix}",
            "topic_verdicts": f"verdicts-{suffix}",
            "topic_review": f"review-{suffix}",
            "topic_dead_letter": f"dead-letter-{suffix}",
            "topic_decisions": f"decisions-{suffix}",
            "consumer_group": f"group-{suffix}",
            **overrides,
        }
    )
    ensure_topics(fresh, fresh.kafka_bootstrap)
    return fresh


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The real Kafka-protocol broker and Redis-protocol server for integration tests."""
    bootstrap = os.environ.get("MODERATION_KAFKA_BOOTSTRAP")
    redis_url = os.environ.get("MODERATION_REDIS_URL")
    if bootstrap and redis_url:
        settings = load_settings(**FAST_GROUP, state_dir=tmp_path_factory.mktemp("state"))
        yield Stack(bootstrap, redis_url, settings)
        return
    from moderation.embedded.stack import down, up

    state_dir: Path = tmp_path_factory.mktemp("embedded")
    settings = load_settings(
        **FAST_GROUP, state_dir=state_dir, embedded_kafka_port=0, embedded_redis_port=0, topic_partitions=2
    )
    state, _ = up(settings)
    settings = load_settings(
        **{**settings.model_dump(), "kafka_bootstrap": state.kafka_bootstrap, "redis_url": state.redis_url}
    )
    try:
        yield Stack(state.kafka_bootstrap, state.redis_url, settings)
    finally:
        down(settings)


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Worker processes a test starts (see ``tests.support.start_worker``); all killed when it ends."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.kill()


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The default model artifact, built once if it is not there yet (as `make demo` does)."""
    from moderation.demo.run import ensure_default_model

    settings = load_settings()
    ensure_default_model(settings)
    return settings.model_dir
