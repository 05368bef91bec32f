"""The processes a contender runs in: ``moderation worker`` subprocesses, or a baseline in a spawned process.

Every contender gets fresh processes, so no one inherits another's warm caches, allocator or threads. The
benchmark pauses them (SIGSTOP) while it produces a backlog and resumes them (SIGCONT) to start the clock, and
reads each one's peak resident memory (``VmHWM``) and GPU memory before stopping it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from moderation.bench.baselines import Mode, run_baseline
from moderation.demo.process import WorkerProcess
from moderation.errors import ModerationError
from moderation.observability.server import free_port
from moderation.settings import Settings, load_settings

READY_TIMEOUT_S = 600.0
T = TypeVar("T")


class Contender(Protocol):
    """What the runner needs of a contender's processes."""

    def start(self) -> None: ...

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None: ...

    def pids(self) -> list[int]: ...

    def stop(self) -> None: ...


class Workers:
    """``moderation worker`` with ``count`` worker processes in one consumer group: one process, or the supervised
    processes of ``MODERATION_WORKER_PROCESSES`` (the product's own way to run several on one machine)."""

    def __init__(self, settings: Settings, count: int, log_dir: Path, name: str) -> None:
        port = free_port(above=count if count > 1 else 0)  # the supervised processes serve just above it
        self.worker = WorkerProcess(
            load_settings(**{**settings.model_dump(), "metrics_port": port, "worker_processes": count}),
            log_dir / f"{name}.log",
        )
        self._pids: list[int] = []

    def start(self) -> None:
        self.worker.start()

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until ``/readyz`` answers 200 (every process's model loaded, group joined); polled every 20 ms."""
        self.worker.wait_ready(timeout_s, poll_s=0.02)
        self._pids = [pid for pid in self.worker.worker_pids() if pid is not None]

    def pids(self) -> list[int]:
        """The worker processes (the supervisor, which only watches them, is not among them)."""
        return list(self._pids)

    def stop(self) -> None:
        self.worker.stop()


class Baseline:
    """A baseline (:mod:`moderation.bench.baselines`) in a spawned process."""

    def __init__(self, settings: Settings, mode: Mode) -> None:
        context = multiprocessing.get_context("spawn")
        self._ready = context.Event()
        self._stop = context.Event()
        self.process = context.Process(
            target=run_baseline, args=(settings, mode, self._ready, self._stop), name=f"bench-{mode}", daemon=True
        )

    def start(self) -> None:
        self.process.start()

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.02):
            if not self.process.is_alive():
                raise ModerationError(f"the {self.process.name} baseline exited before it was ready")
            if time.monotonic() > deadline:
                raise ModerationError(f"the {self.process.name} baseline was not ready within {timeout_s:.0f} s")

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process.pid is not None else []

    def stop(self) -> None:
        self._stop.set()
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def pause(pids: Sequence[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)


def resume(pids: Sequence[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGCONT)


def peak_rss_bytes(pid: int) -> int | None:
    """The process's peak resident set size (``VmHWM``), or None when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def gpu_memory_bytes() -> dict[int, int]:
    """GPU memory in use per process id, from ``nvidia-smi`` (empty when there is none)."""
    if shutil.which("nvidia-smi") is None:
        return {}
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    usage: dict[int, int] = {}
    for line in out.splitlines():
        with contextlib.suppress(ValueError):
            pid, mib = (part.strip() for part in line.split(","))
            usage[int(pid)] = usage.get(int(pid), 0) + int(float(mib) * 1024 * 1024)
    return usage


def in_subprocess(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a fresh spawned process (its own torch threads, allocator and GPU context)."""
    return in_subprocesses(1, function, *args)[0]


def in_subprocesses(count: int, function: Callable[..., T], *args: Any) -> list[T]:
    """``function(*args)`` in ``count`` fresh spawned processes at once, as ``count`` workers would run."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(count) as pool:
        jobs = [pool.apply_async(function, args) for _ in range(count)]
        return [job.get() for job in jobs]
