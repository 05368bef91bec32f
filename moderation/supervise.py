"""``moderation worker`` with ``MODERATION_WORKER_PROCESSES=N`` above 1: N worker processes on one machine, supervised.

Why several processes: on a GPU one worker's Python (post checks, tokenising, fusion, verdicts) is the wall long
before the device is busy (docs/BENCHMARKS.md: about 3,000 posts/s by reference from one process on an H200 whose
models allow 16,000), so several processes share the device; on a CPU one single-threaded worker per core uses
the cores a little better than one worker with a thread per core. Each child is an ordinary worker: its own
consumer-group member, copy of the models and metrics port. The supervisor

- restarts a child that exits, after a back-off, and gives up (every child stopped, ``moderation worker`` exits
  with status 2) once a child has
  exited :data:`MAX_UNREADY_EXITS` times in a row without becoming ready: a wrong setting or a missing model would
  otherwise restart forever, hidden from the orchestrator;
- passes SIGTERM and SIGINT on, so every child finishes, publishes and commits its batches in hand; on Linux a
  child also gets SIGTERM from the kernel if the supervisor itself is killed;
- serves ``/healthz``, ``/readyz`` (every child ready) and ``/metrics`` (every child's series with a ``worker``
  label, and its own restart counter) on ``MODERATION_METRICS_PORT``, so probes and scrapers see one endpoint, as
  with one process. Child ``i`` serves on that port + 1 + i (on free ports when it is 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from moderation.errors import ModerationError
from moderation.observability.metrics import SupervisorMetrics
from moderation.observability.server import free_port, serve
from moderation.settings import Settings, settings_env

log = logging.getLogger(__name__)

#: Exits in a row before ever becoming ready after which the supervisor stops trying.
MAX_UNREADY_EXITS = 3
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
READY_POLL_S = 1.0
CHILD_HTTP_TIMEOUT_S = 2.0


class WorkerProcessesFailed(ModerationError):
    """The supervised workers keep exiting before they are ready; the message says which and where to look."""


@dataclass(eq=False)
class Child:
    """One supervised worker process and what the supervisor knows of it."""

    index: int
    port: int
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    ready_since_start: bool = False
    unready_exits: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running process's id; None while it is down."""
        return self.process.pid if self.process is not None and self.process.returncode is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    async def start(self) -> asyncio.subprocess.Process:
        self.ready_since_start = False
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "moderation",
            "worker",
            env=self.env,
            preexec_fn=functools.partial(_stop_with_parent, os.getpid()) if sys.platform == "linux" else None,
        )
        log.info(
            "worker process %d started", self.index, extra={"child_pid": self.process.pid, "metrics_port": self.port}
        )
        return self.process

    def terminate(self) -> None:
        if self.process is not None and self.running:
            self.process.send_signal(signal.SIGTERM)


def _stop_with_parent(parent: int) -> None:
    """In a child between fork and exec (Linux): ask the kernel for SIGTERM when the supervisor dies, so a
    supervisor killed with SIGKILL leaves no orphaned workers consuming beside the ones its restart starts."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


def child_ports(settings: Settings) -> list[int]:
    """Each child's metrics port: the supervisor's + 1 + index, or free ports when the supervisor's is 0."""
    count = settings.worker_processes
    if settings.metrics_port == 0:
        return [free_port() for _ in range(count)]
    ports = [settings.metrics_port + 1 + index for index in range(count)]
    if ports[-1] > 65535:
        raise WorkerProcessesFailed(
            f"MODERATION_METRICS_PORT={settings.metrics_port} leaves no room for {count} worker processes' ports "
            "above it; choose a lower port"
        )
    return ports


def child_torch_threads(settings: Settings, cores: int) -> int:
    """Torch threads a child runs: as set, or on a CPU its share of the cores (at least 1), so the children do not
    oversubscribe them; with CUDA, the device's default."""
    if settings.torch_threads or not settings.resolved_device.startswith("cpu"):
        return settings.resolved_torch_threads
    return max(1, cores // settings.worker_processes)


def child_env(settings: Settings, port: int, torch_threads: int) -> dict[str, str]:
    """The environment of one child: these settings as one worker process on ``port``."""
    env = settings_env(settings)
    env["MODERATION_WORKER_PROCESSES"] = "1"
    env["MODERATION_METRICS_PORT"] = str(port)
    env["MODERATION_TORCH_THREADS"] = str(torch_threads)
    return env


def merge_expositions(children: Sequence[tuple[str, str]], own: CollectorRegistry) -> bytes:
    """One Prometheus exposition from the children's, ``(worker label, text)`` each, with every sample labelled
    ``worker``, and the supervisor's own registry (already labelled) beside them."""
    families: dict[str, Metric] = {}
    for worker, text in children:
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            merged.samples.extend(
                Sample(s.name, {**s.labels, "worker": worker}, s.value, s.timestamp) for s in family.samples
            )

    class Merged:
        def collect(self) -> list[Metric]:
            return [*families.values(), *own.collect()]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Merged())  # type: ignore[arg-type]
    return generate_latest(registry)


class Supervisor:
    """N worker processes, kept running until stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = child_torch_threads(settings, cores)
        self.children = [
            Child(index, port, child_env(settings, port, threads)) for index, port in enumerate(child_ports(settings))
        ]
        self.metrics = SupervisorMetrics()
        self.stop = asyncio.Event()
        self.failure: WorkerProcessesFailed | None = None

    async def run(self) -> None:
        """Start the children and the endpoints; return once stopped (every child exited), or raise
        :class:`WorkerProcessesFailed` when a child kept exiting before it became ready."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop.set)
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CHILD_HTTP_TIMEOUT_S))
        runner, port = await serve(self._app(session), self.settings.metrics_port)
        log.info(
            "supervising %d worker processes; /metrics, /healthz and /readyz of all of them on port %d",
            len(self.children),
            port,
        )
        poller = asyncio.create_task(self._poll_ready(session))
        stopper = asyncio.create_task(self._stop_children_when_asked())
        try:
            codes = await asyncio.gather(*(self._keep_running(child) for child in self.children))
        finally:
            for task in (poller, stopper):
                task.cancel()
            await runner.cleanup()
            await session.close()
        if self.failure is not None:
            raise self.failure
        failed = {child.index: code for child, code in zip(self.children, codes, strict=True) if code != 0}
        if failed:
            raise WorkerProcessesFailed(f"worker processes exited with errors on stopping: {failed}")

    async def _keep_running(self, child: Child) -> int:
        """Run one child until stopped, restarting it when it exits unasked; its last exit status."""
        while not self.stop.is_set():
            code = await (await child.start()).wait()
            if self.stop.is_set():
                return code
            child.unready_exits = 0 if child.ready_since_start else child.unready_exits + 1
            if child.unready_exits >= MAX_UNREADY_EXITS:
                self.failure = WorkerProcessesFailed(
                    f"worker process {child.index} exited {child.unready_exits} times in a row (last status {code}) "
                    "before it became ready; its log lines above say why (a setting, the model folder, the broker)"
                )
                log.error("%s; stopping the others", self.failure)
                self.stop.set()
                return code
            delay = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2**child.unready_exits)
            log.warning("worker process %d exited with status %d; restarting it in %.0f s", child.index, code, delay)
            self.metrics.worker_restarts.labels(worker=str(child.index)).inc()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)
        return 0

    async def _stop_children_when_asked(self) -> None:
        await self.stop.wait()
        log.info("stopping %d worker processes", sum(child.running for child in self.children))
        for child in self.children:
            child.terminate()

    async def _poll_ready(self, session: aiohttp.ClientSession) -> None:
        """Note when each child first becomes ready after a start (a later exit is then a crash, not a failed
        start)."""
        while True:
            for child in self.children:
                if child.running and not child.ready_since_start:
                    child.ready_since_start = await self._child_ready(session, child)
            await asyncio.sleep(READY_POLL_S)

    @classmethod
    async def _child_ready(cls, session: aiohttp.ClientSession, child: Child) -> bool:
        answer = await cls._get(session, child, "readyz")
        return answer is not None and answer[0] == 200

    @staticmethod
    async def _get(session: aiohttp.ClientSession, child: Child, route: str) -> tuple[int, str] | None:
        """A running child's ``/route``: its status and body, or None while it is down or not answering (starting
        or restarting: its series are then missing from a scrape, as a restarted pod's are)."""
        if not child.running:
            return None
        try:
            async with session.get(f"{child.url}/{route}") as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return None

    def _app(self, session: aiohttp.ClientSession) -> web.Application:
        async def scrape(_: web.Request) -> web.Response:
            answers = await asyncio.gather(*(self._get(session, child, "metrics") for child in self.children))
            texts = [(str(child.index), a[1]) for child, a in zip(self.children, answers, strict=True) if a is not None]
            body = merge_expositions(texts, self.metrics.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response({"status": "alive", "workers": [{"pid": child.pid} for child in self.children]})

        async def readyz(_: web.Request) -> web.Response:
            ready = await asyncio.gather(*(self._child_ready(session, child) for child in self.children))
            return web.json_response({"ready": all(ready), "workers": ready}, status=200 if all(ready) else 503)

        app = web.Application()
        app.router.add_get("/metrics", scrape)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        return app


async def run_supervised(settings: Settings) -> None:
    """Run ``settings.worker_processes`` workers until SIGTERM or SIGINT (see the module's docstring)."""
    await Supervisor(settings).run()
