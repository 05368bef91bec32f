"""The project's thin Kafka layer: the only module that talks to a stream client library.

Stages see :class:`RawRecord` batches and an ``Outgoing`` message list; the worker sees :class:`StreamConsumer`
and :class:`StreamProducer`. The implementation here uses aiokafka, the asyncio Kafka client that faust-streaming
itself runs on, driven directly so that offsets are committed only after every message they cover has been
acknowledged by the broker (see the README for why faust's agent model is not used for that loop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from moderation.ingest.connection import group_consumer_options, kafka_client_options
from moderation.settings import Settings
from moderation.types import RawRecord

log = logging.getLogger(__name__)

Offsets = Mapping[tuple[str, int], int]


@dataclass(frozen=True)
class Outgoing:
    """One message to publish."""

    topic: str
    key: bytes | None
    value: bytes


def next_offsets(records: Iterable[RawRecord]) -> dict[tuple[str, int], int]:
    """The offsets to commit after ``records``: one past the highest offset per partition."""
    offsets: dict[tuple[str, int], int] = {}
    for record in records:
        position = (record.topic, record.partition)
        offsets[position] = max(offsets.get(position, 0), record.offset + 1)
    return offsets


#: How often a filling batch checks whether it should stop filling (see ``StreamConsumer.poll_batch``).
FILL_SLICE_MS = 5


class _AssignmentTracker(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()
        self.joined = asyncio.Event()
        self.before_revoke: Callable[[], Awaitable[None]] | None = None

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked and self.before_revoke is not None:
            await self.before_revoke()
        self.assigned.difference_update(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.assigned.update(assigned)
        self.joined.set()


class StreamConsumer:
    """A consumer-group member that hands out batches by size and time and commits explicit offsets."""

    def __init__(self, settings: Settings, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.tracker = _AssignmentTracker()
        self.committed: dict[int, int] = {}
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id="moderation-worker",
            **group_consumer_options(settings),
            **kafka_client_options(settings, flavour="aiokafka"),
        )

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe([self.topic], listener=self.tracker)

    async def stop(self) -> None:
        await self._consumer.stop()

    def before_revoke(self, drain: Callable[[], Awaitable[None]]) -> None:
        """Await ``drain`` inside every rebalance, before this member's partitions are taken away: the moment to
        commit what it has in hand (commits still count then), so the partitions' next owner does not replay it."""
        self.tracker.before_revoke = drain

    @property
    def joined(self) -> bool:
        """True once the group has assigned this member its partitions (it may be none)."""
        return self.tracker.joined.is_set()

    async def poll_batch(
        self,
        max_records: int,
        max_wait_ms: int,
        idle_wait_ms: int = 1000,
        stop_filling: Callable[[], bool] | None = None,
    ) -> list[RawRecord]:
        """Up to ``max_records``: waits up to ``idle_wait_ms`` for the first, then ``max_wait_ms`` to fill up.

        With ``stop_filling``, a batch that holds records is returned as soon as it answers True (checked every
        ``FILL_SLICE_MS``): the worker passes "the models are idle", since filling then only adds latency.
        """
        records: list[RawRecord] = []
        first = await self._consumer.getmany(timeout_ms=idle_wait_ms, max_records=max_records)
        records.extend(_convert(first))
        deadline = time.monotonic() + max_wait_ms / 1000
        while records and len(records) < max_records:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 or (stop_filling is not None and stop_filling()):
                break
            if stop_filling is not None:
                remaining_ms = min(remaining_ms, FILL_SLICE_MS)
            more = await self._consumer.getmany(timeout_ms=remaining_ms, max_records=max_records - len(records))
            records.extend(_convert(more))
        return records

    async def commit(self, offsets: Offsets) -> bool:
        """Commit offsets; False when a rebalance moved a partition away (its records will be redelivered)."""
        if not offsets:
            return True
        try:
            await self._consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("offset commit refused after a rebalance; those posts will be redelivered: %s", exc)
            return False
        self.committed.update({partition: offset for (_, partition), offset in offsets.items()})
        return True

    async def lag(self) -> dict[int, int]:
        """Messages not yet processed (end offset minus our last commit), per assigned partition.

        Against the embedded Tansu broker the end offset can read short (it reports the last batch's base offset
        plus one), so its lag is a lower bound there; Apache Kafka reports it exactly.
        """
        assigned = list(self.tracker.assigned)
        if not assigned:
            return {}
        ends = await self._consumer.end_offsets(assigned)
        lag = {}
        for tp in assigned:
            done = self.committed.get(tp.partition)
            if done is None:
                done = await self._consumer.position(tp)
            lag[tp.partition] = max(0, ends[tp] - done)
        return lag


def _convert(batch: Mapping[TopicPartition, list[Any]]) -> list[RawRecord]:
    return [
        RawRecord(
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            key=r.key,
            value=r.value or b"",
            timestamp_ms=r.timestamp,
        )
        for records in batch.values()
        for r in records
    ]


class StreamProducer:
    """Publishes messages and waits for the broker's acknowledgement of every one.

    No linger: :meth:`publish` hands a whole batch to the client before its sender task runs, so the messages
    still travel in one request per broker, and waiting for more only delays the acks. Measured against the
    embedded broker: 256 verdicts 14.4 ms a publish with ``linger_ms=5``, 3.8-4.5 ms with 0; 2 verdicts 6 ms and
    0.35 ms.
    """

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id="moderation-worker",
            acks="all",
            linger_ms=0,
            max_request_size=max(1_048_576, settings.max_message_bytes * 2),
            request_timeout_ms=30_000,
            **kafka_client_options(settings, flavour="aiokafka"),
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, messages: Iterable[Outgoing]) -> None:
        """Send all messages and return once the broker acknowledged each; raises ``KafkaError`` otherwise."""
        pending: list[Awaitable[Any]] = [await self._producer.send(m.topic, value=m.value, key=m.key) for m in messages]
        await asyncio.gather(*pending)


__all__ = ["KafkaError", "Outgoing", "StreamConsumer", "StreamProducer", "next_offsets"]
