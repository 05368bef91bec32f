"""The foundation's round trip on the real broker and cache, and the embedded stack's lifecycle."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from moderation.embedded.stack import read_state
from moderation.settings import load_settings
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def test_message_round_trips_through_a_consumer_group(stack: Stack) -> None:
    settings = stack.unique_topics()
    payload = f"hello-{uuid.uuid4().hex}".encode()
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    producer.send(settings.topic_posts, key=b"post-1", value=payload).get(timeout=10)
    producer.close()

    consumer = KafkaConsumer(
        settings.topic_posts,
        bootstrap_servers=stack.kafka_bootstrap,
        group_id=settings.consumer_group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_poll_interval_ms=settings.max_poll_interval_ms,
    )
    try:
        received = []
        for _ in range(60):
            for records in consumer.poll(timeout_ms=500).values():
                received.extend(records)
            if received:
                break
        assert [(r.key, r.value) for r in received] == [(b"post-1", payload)]
        consumer.commit()
        record = received[0]
        assert consumer.committed(TopicPartition(record.topic, record.partition)) == record.offset + 1
    finally:
        consumer.close()


def test_key_round_trips_through_the_cache(stack: Stack) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    key = f"test:{uuid.uuid4().hex}"
    assert client.set(key, b"value", nx=True, ex=60)
    assert not client.set(key, b"other", nx=True, ex=60)
    assert client.get(key) == b"value"
    assert 0 < client.ttl(key) <= 60


def _moderation(*args: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "MODERATION_STATE_DIR": str(state_dir),
        "MODERATION_EMBEDDED_KAFKA_PORT": "0",
        "MODERATION_EMBEDDED_REDIS_PORT": "0",
        "HOME": str(Path.home()),
    }
    return subprocess.run(
        [sys.executable, "-m", "moderation", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_up_status_down_twice_leaves_nothing_behind(tmp_path: Path) -> None:
    for _ in range(2):
        first = _moderation("up", state_dir=tmp_path)
        assert first.returncode == 0, first.stderr
        assert "started" in first.stdout
        again = _moderation("up", state_dir=tmp_path)
        assert "already running" in again.stdout
        state = read_state(load_settings(state_dir=tmp_path))
        assert state is not None and all(s.alive() for s in state.services())
        assert _moderation("status", state_dir=tmp_path).returncode == 0
        assert "stopped: broker, cache" in _moderation("down", state_dir=tmp_path).stdout
        assert not any(s.alive() for s in state.services())
        assert _moderation("status", state_dir=tmp_path).returncode == 1


def test_busy_port_gives_a_one_line_fix(tmp_path: Path, stack: Stack) -> None:
    busy_port = stack.kafka_bootstrap.rsplit(":", 1)[1]
    env_dir = tmp_path / "busy"
    result = subprocess.run(
        [sys.executable, "-m", "moderation", "up"],
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(Path.home()),
            "MODERATION_STATE_DIR": str(env_dir),
            "MODERATION_EMBEDDED_KAFKA_PORT": busy_port,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert f"port {busy_port} is busy" in result.stderr and "MODERATION_EMBEDDED_KAFKA_PORT" in result.stderr
