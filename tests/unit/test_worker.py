"""The worker's batch ordering with in-memory fakes of the broker clients and the pipeline: batch N + 1 is
prepared and completed while batch N is published and committed, commits follow consumption order, each only after
its own batch was acknowledged, a batch that was never acknowledged stops later ones from being committed, and a
rebalance first lets the worker commit every batch it has in hand; and on a CPU the prepare thread yields the cores
to the models' thread.

The real broker and Redis are exercised in ``tests/integration/test_worker.py`` and ``tests/reliability``."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import pytest
import torch
from aiokafka.errors import KafkaError

from moderation.ingest.stream import Outgoing
from moderation.observability.metrics import Metrics
from moderation.pipeline import BatchResult
from moderation.settings import Settings, load_settings
from moderation.types import RawRecord
from moderation.worker import Worker, set_thread_priority

BATCHES = 4
PER_BATCH = 3


def _batches() -> list[list[RawRecord]]:
    return [
        [RawRecord("posts", 0, n * PER_BATCH + i, b"k", b"{}", 1_000 + n) for i in range(PER_BATCH)]
        for n in range(BATCHES)
    ]


class Events:
    """What happened, in order, from the event loop and the processing thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[tuple[str, int]] = []

    def add(self, what: str, batch: int) -> None:
        with self.lock:
            self.log.append((what, batch))

    def index(self, what: str, batch: int) -> int:
        return self.log.index((what, batch))


def _batch_of(offset: int) -> int:
    return offset // PER_BATCH


class FakeConsumer:
    def __init__(self, events: Events, stop: asyncio.Event, revoke_at_batch: int | None = None) -> None:
        self.events = events
        self.stop_event = stop
        self.pending = _batches()
        self.committed: list[dict[tuple[str, int], int]] = []
        self.joined = True
        self.revoke_at_batch = revoke_at_batch
        self.drain: Callable[[], Awaitable[None]] | None = None
        self.rebalance: asyncio.Task[None] | None = None

    def before_revoke(self, drain: Callable[[], Awaitable[None]]) -> None:
        self.drain = drain

    async def _rebalance(self) -> None:
        """What aiokafka does in a rebalance: await the listener, then take the partitions away."""
        assert self.drain is not None
        await self.drain()
        self.events.add("revoked", len(self.committed))

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def poll_batch(self, max_records: int, max_wait_ms: int, stop_filling: object = None) -> list[RawRecord]:
        if not self.pending:
            self.stop_event.set()
            return []
        batch = self.pending.pop(0)
        number = _batch_of(batch[0].offset)
        self.events.add("polled", number)
        if number == self.revoke_at_batch:
            self.rebalance = asyncio.create_task(self._rebalance())
        return batch

    async def commit(self, offsets: dict[tuple[str, int], int]) -> bool:
        self.committed.append(offsets)
        self.events.add("committed", _batch_of(offsets["posts", 0] - 1))
        return True

    async def lag(self) -> dict[int, int]:
        return {}


class FakeProducer:
    """Acknowledges a batch only after the next batch's processing began (a slow broker), so a worker that waited
    for the commit before processing the next batch would deadlock, and the test would time out."""

    def __init__(self, events: Events, fail_from_batch: int | None = None, slow: bool = True) -> None:
        self.events = events
        self.fail_from_batch = fail_from_batch
        self.slow = slow

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, messages: Iterable[Outgoing]) -> None:
        batch = int(next(iter(messages)).value)
        if self.fail_from_batch is not None and batch >= self.fail_from_batch:
            raise KafkaError("broker unreachable")
        while self.slow and batch + 1 < BATCHES and ("processing", batch + 1) not in self.events.log:
            await asyncio.sleep(0.001)
        self.events.add("acknowledged", batch)


class FakePipeline:
    def __init__(self, events: Events) -> None:
        self.events = events
        self.policies: dict[str, set[int]] = {"prepare": set(), "complete": set()}  # scheduling policy per step
        self.threads: dict[str, set[tuple[str, int]]] = {"prepare": set(), "complete": set()}  # (name, torch's)

    def _seen(self, step: str) -> None:
        self.policies[step].add(_policy())
        self.threads[step].add((threading.current_thread().name, torch.get_num_threads()))

    def prepare(self, records: Sequence[RawRecord]) -> int:
        batch = _batch_of(records[0].offset)
        self.events.add("preparing", batch)
        self._seen("prepare")
        return batch

    def complete(self, batch: int) -> BatchResult:
        self.events.add("processing", batch)
        self._seen("complete")
        return BatchResult(messages=[Outgoing("verdicts", b"k", str(batch).encode())])

    def after_publish(self, result: BatchResult) -> None: ...

    def dead_letter(self, rejection: Any) -> Outgoing:
        raise AssertionError("no record is rejected here")


def _policy() -> int:
    return os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else -1


def _run(
    fail_from_batch: int | None = None,
    revoke_at_batch: int | None = None,
    pipeline: FakePipeline | None = None,
    settings: Settings | None = None,
) -> tuple[Events, FakeConsumer]:
    async def main() -> tuple[Events, FakeConsumer]:
        events, stop = (pipeline.events if pipeline else Events()), asyncio.Event()
        consumer = FakeConsumer(events, stop, revoke_at_batch)
        worker = Worker(
            settings or load_settings(device="cpu"),
            pipeline or FakePipeline(events),  # type: ignore[arg-type]
            consumer,  # type: ignore[arg-type]
            FakeProducer(events, fail_from_batch, slow=revoke_at_batch is None),  # type: ignore[arg-type]
            Metrics(),
        )
        if fail_from_batch is not None:
            asyncio.get_running_loop().call_later(0.2, stop.set)  # the worker is asked to stop during the outage
        await asyncio.wait_for(worker.run(stop), timeout=10)
        if consumer.rebalance is not None:
            await consumer.rebalance
        return events, consumer

    return asyncio.run(main())


def test_the_next_batch_is_processed_while_the_previous_one_is_published_and_committed() -> None:
    events, consumer = _run()
    for batch in range(BATCHES - 1):
        assert events.index("preparing", batch + 1) < events.index("processing", batch + 1)
        assert events.index("processing", batch + 1) < events.index("acknowledged", batch)
        assert events.index("acknowledged", batch) < events.index("committed", batch)
    assert [offsets["posts", 0] for offsets in consumer.committed] == [
        (n + 1) * PER_BATCH for n in range(BATCHES)
    ]  # every batch, in consumption order


def test_nothing_after_a_batch_that_was_never_acknowledged_is_committed() -> None:
    events, consumer = _run(fail_from_batch=1)
    assert [offsets["posts", 0] for offsets in consumer.committed] == [PER_BATCH]  # batch 0 only
    assert ("acknowledged", 1) not in events.log
    assert ("processing", 3) not in events.log  # batch 2 was processed during the outage; then the worker stopped


def test_a_rebalance_waits_until_every_batch_in_hand_is_committed() -> None:
    events, consumer = _run(revoke_at_batch=1)
    # batches 0 and 1 were in hand when the rebalance began: both committed before the partitions went
    assert ("revoked", 2) in events.log
    assert events.index("committed", 1) < events.log.index(("revoked", 2))
    assert events.index("revoked", 2) < events.index("polled", 2)  # nothing new was polled meanwhile
    assert len(consumer.committed) == BATCHES


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="per-thread scheduling policies are Linux only")
def test_on_a_cpu_only_the_prepare_thread_runs_at_idle_priority() -> None:
    """The models' thread keeps normal priority; preparing runs on whatever core time the models leave."""
    pipeline = FakePipeline(Events())
    _run(pipeline=pipeline)
    assert pipeline.policies == {"prepare": {os.SCHED_IDLE}, "complete": {os.SCHED_OTHER}}
    assert _policy() == os.SCHED_OTHER  # nor did it leak to the test's own thread


def test_the_models_run_on_one_thread_and_only_it_runs_torch_on_several() -> None:
    """One OpenMP team in the process: every batch on the same models thread, with the configured torch threads;
    the prepare thread on one torch thread; threads started later get the models' count."""
    pipeline = FakePipeline(Events())
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the test's thread: the worker must not take its count from here
        _run(pipeline=pipeline, settings=load_settings(device="cpu", torch_threads=2))
        assert pipeline.threads == {"prepare": {("prepare_0", 1)}, "complete": {("models_0", 2)}}
        later: list[int] = []
        thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert later == [2]
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="per-thread scheduling policies are Linux only")
def test_thread_priority_levels() -> None:
    seen: dict[str, tuple[int, int]] = {}

    def probe(level: Any) -> None:
        set_thread_priority(level)
        seen[level] = (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    for level in ("normal", "low", "idle"):
        thread = threading.Thread(target=probe, args=(level,))
        thread.start()
        thread.join()
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert seen == {
        "normal": (os.SCHED_OTHER, base),
        "low": (os.SCHED_OTHER, 19),
        "idle": (os.SCHED_IDLE, base),
    }
