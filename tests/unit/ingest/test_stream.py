"""``StreamConsumer.poll_batch`` over a fake aiokafka consumer: how long a batch fills, and when it stops early."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka.structs import TopicPartition

from moderation.ingest.stream import StreamConsumer
from moderation.settings import load_settings


class Record:
    def __init__(self, offset: int) -> None:
        self.topic, self.partition, self.offset = "posts", 0, offset
        self.key = b"k"
        self.value = b"{}"
        self.timestamp = 0


class TrickleConsumer:
    """A record arrives every 10 ms, as on a topic at low load; ``getmany`` waits for the next up to its timeout."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.delivered = 0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        now = time.monotonic()
        self.started = self.started or now
        wait = self.started + (self.delivered + 1) * 0.01 - now
        if wait > timeout_ms / 1000:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        await asyncio.sleep(max(0.0, wait))
        self.delivered += 1
        return {TopicPartition("posts", 0): [Record(self.delivered)]}


def _poll(**options: Any) -> tuple[int, float]:
    async def poll() -> tuple[int, float]:
        consumer = StreamConsumer(load_settings(), "127.0.0.1:9", "posts")  # never started: no connection
        real, consumer._consumer = consumer._consumer, TrickleConsumer()  # type: ignore[assignment]
        await real.stop()
        started = time.monotonic()
        records = await consumer.poll_batch(64, 200, **options)
        return len(records), time.monotonic() - started

    return asyncio.run(poll())


def test_a_batch_fills_for_the_whole_wait_while_the_models_are_busy() -> None:
    count, elapsed = _poll(stop_filling=lambda: False)
    assert count > 5 and elapsed >= 0.2


def test_a_batch_goes_at_once_when_the_models_are_idle() -> None:
    count, elapsed = _poll(stop_filling=lambda: True)
    assert count == 1 and elapsed < 0.1


def test_without_the_check_a_batch_fills_for_the_whole_wait() -> None:
    count, elapsed = _poll()
    assert count > 5 and elapsed >= 0.2
