"""The stream worker: consume a batch, process it off the event loop, publish, wait for acks, then commit.

Delivery is at-least-once: a batch's offsets are committed only after every verdict and dead-letter record it
produced was acknowledged by the broker, and batches are committed in the order they were consumed. A crash
anywhere before the commit replays the batch, and replays are harmless because decisions are stored with SET NX
and republished as first decided.

Model work runs in threads, so the asyncio loop keeps the consumer's heartbeats going. Up to three batches are in
hand at once: while batch N is published, acknowledged and committed on the event loop, batch N + 1 goes through
the models in one thread and batch N + 2 is prepared (decoded, checked, looked up, images decoded) in another, so
the models wait neither for the broker nor for the host work. On a CPU the prepare thread runs at idle priority
(``MODERATION_PREPARE_PRIORITY``): a thread that takes a core from a multi-threaded forward pass stalls all of its
threads at their next synchronisation, so preparing gets only the core time the models leave. For the same
reason only the models' thread runs torch on several threads (see :class:`WorkerThreads`). SIGTERM lets the
batches in hand finish, publish and commit, then leaves the group.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiokafka.errors import KafkaError

from moderation.ingest.stream import StreamConsumer, StreamProducer, next_offsets
from moderation.observability.metrics import Metrics
from moderation.pipeline import BatchResult, Pipeline, PreparedBatch
from moderation.settings import Settings, ThreadPriority
from moderation.types import RawRecord, ReasonCode, Rejection

log = logging.getLogger(__name__)

PUBLISH_RETRY_S = 1.0
OBSERVE_INTERVAL_S = 1.0
#: Longest a rebalance waits for this worker to finish and commit its batches in hand (the group waits with it).
REBALANCE_DRAIN_S = 30.0


@dataclass(eq=False)  # identity: batches hold tensors, and the worker finds a batch in hand by identity
class InHand:
    """A consumed batch not yet committed: its records, each partition's earliest record timestamp (the age of
    the oldest unprocessed post, for the lag metric), and the batch once prepared (None if that failed)."""

    records: Sequence[RawRecord]
    oldest_ms: dict[int, int] = field(default_factory=dict)
    prepared: PreparedBatch | None = None


@dataclass(frozen=True)
class WorkerThreads:
    """The worker's two threads that run torch: the models' (warm-up and one-by-one retries included) and the
    prepare step's, each a one-thread executor.

    Every thread that runs a torch operation on several threads keeps an OpenMP team of its own, and once a
    process has more team threads than cores, libgomp stops spinning at the end of each parallel operation and
    puts the waiting threads to sleep, to be woken for the next one. Measured on 2 cores: one idle extra team
    slowed the image model by 10-16% and the text model by 4-8%; the worker used to have three (two threads of
    asyncio's default executor took turns with the models, and the prepare thread resized images). So the models
    keep one thread and the prepare thread runs torch on one thread, which forms no team.
    """

    models: ThreadPoolExecutor
    prepare: ThreadPoolExecutor

    @classmethod
    def start(cls, settings: Settings) -> WorkerThreads:
        """Both threads, started now and in this order: setting a thread's torch threads also sets the count
        every later thread starts with, which the models' thread, set last, leaves at the models' value."""
        import torch

        model_threads = settings.resolved_torch_threads or torch.get_num_threads()  # 0: torch's default
        prepare = _started_thread("prepare", settings.resolved_prepare_priority, 1)
        models = _started_thread("models", "normal", model_threads)
        return cls(models, prepare)

    def shutdown(self) -> None:
        self.prepare.shutdown(wait=False)
        self.models.shutdown(wait=False)


def _started_thread(name: str, priority: ThreadPriority, torch_threads: int) -> ThreadPoolExecutor:
    executor = ThreadPoolExecutor(1, name, initializer=_configure_thread, initargs=(priority, torch_threads))
    executor.submit(int).result()  # runs the initializer now, not at the first task
    return executor


def _configure_thread(priority: ThreadPriority, torch_threads: int) -> None:
    import torch

    set_thread_priority(priority)
    torch.set_num_threads(torch_threads)  # the process-wide count (and MKL's), and this thread's own
    torch.get_num_threads()  # a thread takes the process-wide count once, at its first torch call: take it now


class Worker:
    """One consumer-group member running the pipeline."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        consumer: StreamConsumer,
        producer: StreamProducer,
        metrics: Metrics,
        threads: WorkerThreads | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.consumer = consumer
        self.producer = producer
        self.metrics = metrics
        self.batches_committed = 0
        self._in_hand: collections.deque[InHand] = collections.deque()  # oldest first
        self._nothing_in_hand = asyncio.Event()
        self._nothing_in_hand.set()
        self._not_draining = asyncio.Event()  # cleared while a rebalance waits for the batches in hand
        self._not_draining.set()
        self._running = False
        self._waiting_for_batch = False  # the models are idle, waiting for the feeder
        consumer.before_revoke(self._drain)
        self.threads = threads or WorkerThreads.start(settings)

    @property
    def ready(self) -> bool:
        """The group was joined (the model is loaded before a worker exists)."""
        return self.consumer.joined

    async def run(self, stop: asyncio.Event) -> None:
        """Process batches until ``stop`` is set; the batches in hand are finished and committed first.

        Three batches can be in hand: batch N + 2 is polled and prepared (no model) by a feeder task while batch
        N + 1 goes through the models and batch N is published and committed. The feeder works independently of
        the models, so at low load a batch goes to the models as soon as it is prepared.
        """
        await self.producer.start()
        await self.consumer.start()
        self._running = True
        observer = asyncio.create_task(self._observe(stop))
        ready: asyncio.Queue[InHand | None] = asyncio.Queue()  # prepared batches; None once the feeder stopped
        ahead = asyncio.Semaphore(1)  # at most one prepared batch waits for the models
        feeder = asyncio.create_task(self._feed(stop, ready, ahead))
        finishing: asyncio.Task[bool] | None = None  # publish and commit of the previous batch
        try:
            while (batch := await self._next(ready)) is not None:
                ahead.release()
                result = await asyncio.get_running_loop().run_in_executor(self.threads.models, self._complete, batch)
                if finishing is not None and not await finishing:
                    break  # the previous batch was not published: committing this one would skip it
                finishing = asyncio.create_task(self._finish(batch, result, stop))
            else:  # the feeder stopped (asked to, or failed): finish the last batch, then raise what failed
                if finishing is not None:
                    await finishing
                await feeder
        finally:
            self._running = False
            for task in (feeder, finishing):
                if task is not None and not task.done():
                    task.cancel()
            observer.cancel()
            self.threads.shutdown()
            await self.consumer.stop()
            await self.producer.stop()

    async def _next(self, ready: asyncio.Queue[InHand | None]) -> InHand | None:
        """The next prepared batch; while the models wait for it, the feeder stops filling the batch it polls."""
        self._waiting_for_batch = True
        try:
            return await ready.get()
        finally:
            self._waiting_for_batch = False

    def _models_idle(self) -> bool:
        return self._waiting_for_batch

    async def _feed(self, stop: asyncio.Event, ready: asyncio.Queue[InHand | None], ahead: asyncio.Semaphore) -> None:
        """Poll and prepare batches for the models, one ahead of them, until ``stop`` is set."""
        try:
            while not stop.is_set():
                await self._not_draining.wait()
                await ahead.acquire()
                if stop.is_set():
                    break
                records = await self.consumer.poll_batch(
                    self.settings.batch_max_size, self.settings.batch_max_wait_ms, stop_filling=self._models_idle
                )
                if records:
                    ready.put_nowait(await self._prepare(records))
                else:
                    ahead.release()
        finally:
            ready.put_nowait(None)

    async def _observe(self, stop: asyncio.Event) -> None:
        """Once a second: consumer lag in messages and seconds per partition, and GPU memory and utilisation."""
        while not stop.is_set():
            await asyncio.sleep(OBSERVE_INTERVAL_S)
            try:
                lag = await self.consumer.lag()
            except KafkaError as exc:
                log.warning("cannot read consumer lag: %s", exc)
                continue
            now_ms = time.time() * 1000
            for partition, messages in lag.items():
                self.metrics.lag_messages.labels(partition=str(partition)).set(messages)
                oldest = min((b.oldest_ms[partition] for b in self._in_hand if partition in b.oldest_ms), default=None)
                age = (now_ms - oldest) / 1000 if oldest is not None else 0.0
                self.metrics.lag_seconds.labels(partition=str(partition)).set(age if messages or oldest else 0.0)
            observe_gpu(self.metrics)

    async def _prepare(self, records: Sequence[RawRecord]) -> InHand:
        self.metrics.posts_consumed.inc(len(records))
        batch = InHand(records)
        for record in records:
            batch.oldest_ms[record.partition] = min(
                batch.oldest_ms.get(record.partition, record.timestamp_ms), record.timestamp_ms
            )
        self._in_hand.append(batch)
        self._nothing_in_hand.clear()
        self.metrics.in_flight.set(sum(len(b.records) for b in self._in_hand))
        loop = asyncio.get_running_loop()
        batch.prepared = await loop.run_in_executor(self.threads.prepare, self._prepare_or_none, records)
        return batch

    def _prepare_or_none(self, records: Sequence[RawRecord]) -> PreparedBatch | None:
        try:
            return self.pipeline.prepare(records)
        except Exception:
            log.exception("preparing a batch of %d failed; its records will be retried one by one", len(records))
            return None

    def _complete(self, batch: InHand) -> BatchResult:
        """The prepared batch through the models; if it fails as a whole (or could not be prepared), each record
        alone, so one poison message becomes one dead-letter record instead of taking its batch (or the worker)
        down."""
        if batch.prepared is not None:
            try:
                return self.pipeline.complete(batch.prepared)
            except Exception:
                log.exception("batch of %d failed; retrying its records one by one", len(batch.records))
        merged = BatchResult()
        for record in batch.records:
            try:
                single = self.pipeline.process([record])
            except Exception as exc:
                log.exception("record %s/%d@%d failed", record.topic, record.partition, record.offset)
                rejection = Rejection(record, ReasonCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
                single = BatchResult(rejections=[rejection], messages=[self.pipeline.dead_letter(rejection)])
            merged.messages.extend(single.messages)
            merged.verdicts.extend(single.verdicts)
            merged.rejections.extend(single.rejections)
            merged.review_sent_keys.extend(single.review_sent_keys)
            merged.created_at.extend(single.created_at)
        return merged

    async def _finish(self, batch: InHand, result: BatchResult, stop: asyncio.Event) -> bool:
        """Publish a completed batch, wait for the broker's acks, then commit its offsets; False if asked to stop
        before the broker acknowledged (nothing committed: the batch will be redelivered)."""
        publishing = time.perf_counter()
        if not await self._publish(result, stop):
            return False
        self.metrics.stage_seconds.labels(stage="publish").observe(time.perf_counter() - publishing)
        await asyncio.to_thread(self.pipeline.after_publish, result)
        self._maybe_inject_crash()
        if await self.consumer.commit(next_offsets(batch.records)):
            self.batches_committed += 1
        else:
            self.metrics.commit_failures.inc()
        self._in_hand.remove(batch)
        if not self._in_hand:
            self._nothing_in_hand.set()
        self.metrics.in_flight.set(sum(len(b.records) for b in self._in_hand))
        return True

    async def _drain(self) -> None:
        """Inside a rebalance, before this worker's partitions move: finish and commit the batches in hand (up to
        three), polling nothing new meanwhile, so their next owner does not process and publish them again."""
        if not self._running or not self._in_hand:
            return
        self._not_draining.clear()
        try:
            await asyncio.wait_for(self._nothing_in_hand.wait(), REBALANCE_DRAIN_S)
        except TimeoutError:
            log.warning(
                "%d batches still in hand %.0f s into a rebalance; their posts will be processed again by the "
                "partitions' next owner",
                len(self._in_hand),
                REBALANCE_DRAIN_S,
            )
        finally:
            self._not_draining.set()

    async def _publish(self, result: BatchResult, stop: asyncio.Event) -> bool:
        """Publish until acknowledged (retrying through broker outages); False if asked to stop first."""
        while True:
            try:
                await self.producer.publish(result.messages)
                return True
            except KafkaError as exc:
                log.warning("publish failed, retrying in %.0f s: %s", PUBLISH_RETRY_S, exc)
                if stop.is_set():
                    return False
                await asyncio.sleep(PUBLISH_RETRY_S)

    def _maybe_inject_crash(self) -> None:
        """Testing hook: die between publish and commit at a configured batch, as a SIGKILL would."""
        target = self.settings.debug_kill_before_commit_batch
        if target and self.batches_committed + 1 == target:
            log.warning("debug_kill_before_commit_batch=%d reached: killing this process", target)
            os.kill(os.getpid(), signal.SIGKILL)


def set_thread_priority(level: ThreadPriority) -> None:
    """Give the calling thread ``level`` (see ``Settings.prepare_priority``); where the OS refuses or has no
    per-thread priority, log it and keep running at normal priority."""
    if level not in ("low", "idle"):
        return
    if sys.platform != "linux":  # elsewhere a thread id is no pid, and setpriority could renice another process
        log.warning("thread priority %r is Linux only; running at normal priority", level)
        return
    try:
        if level == "low":
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # Linux: a thread id names one thread
        elif level == "idle":
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: the calling thread
    except (AttributeError, OSError) as exc:
        log.warning("cannot set thread priority %r (%s); running at normal priority", level, exc)


def observe_gpu(metrics: Metrics) -> None:
    """GPU memory and utilisation, when torch sees CUDA (utilisation needs NVML, else it stays unset)."""
    import torch

    if not torch.cuda.is_available():
        return
    metrics.gpu_memory_bytes.set(torch.cuda.memory_allocated())
    with contextlib.suppress(RuntimeError, ModuleNotFoundError):
        metrics.gpu_utilization.set(torch.cuda.utilization() / 100)


async def run_worker(settings: Settings, metrics: Metrics | None = None) -> None:
    """Build everything the settings name and run one worker until SIGTERM or SIGINT.

    ``/healthz`` answers from the start; ``/readyz`` only once the model is loaded and the group joined.
    """
    from moderation.allocator import configure_allocator, freeze_loaded_objects
    from moderation.ingest.connection import resolve_endpoints
    from moderation.observability.server import start_server
    from moderation.pipeline import build_pipeline

    configure_allocator(settings.host_allocator)  # first: before any thread picks its arena
    endpoints = resolve_endpoints(settings)
    if endpoints.redis_url is None:
        log.warning("no Redis configured: running without verdict dedup and encoding cache")
    metrics = metrics or Metrics()
    running: list[Worker] = []
    runner, port = await start_server(metrics, lambda: bool(running) and running[0].ready, settings.metrics_port)
    log.info("serving /metrics, /healthz and /readyz on port %d", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        threads = WorkerThreads.start(settings)  # the models load and warm up on the thread that will run them
        pipeline = await loop.run_in_executor(threads.models, build_pipeline, settings, endpoints.redis_url, metrics)
        freeze_loaded_objects()
        worker = Worker(
            settings,
            pipeline,
            StreamConsumer(settings, endpoints.kafka_bootstrap, settings.topic_posts),
            StreamProducer(settings, endpoints.kafka_bootstrap),
            metrics,
            threads,
        )
        running.append(worker)
        log.info("worker starting", extra={"device": settings.resolved_device, "topic": settings.topic_posts})
        await worker.run(stop)
        log.info("worker stopped after %d committed batches", worker.batches_committed)
    finally:
        await runner.cleanup()
