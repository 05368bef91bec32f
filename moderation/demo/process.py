"""A ``moderation worker`` subprocess configured from a settings object: for the demo, tests and benchmarks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from moderation.errors import ModerationError
from moderation.settings import Settings, settings_env

READY_TIMEOUT_S = 300.0


class WorkerProcess:
    """One worker process; its metrics port comes from ``settings.metrics_port`` (must not be 0)."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.metrics_port}"

    def start(self) -> WorkerProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moderation", "worker"], env=settings_env(self.settings), stdout=log, stderr=log
            )
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S, poll_s: float = 0.3) -> None:
        """Until ``/readyz`` answers 200: the model is loaded and the group joined."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise ModerationError(f"the worker exited before it was ready; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.metrics_url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(poll_s)
        raise ModerationError(f"the worker was not ready within {timeout_s:.0f} s; see {self.log_path}")

    def worker_pids(self) -> list[int | None]:
        """The processes doing the work: with ``MODERATION_WORKER_PROCESSES`` above 1 the supervised children (None
        for one that is down, from the supervisor's ``/healthz``), else this process."""
        if self.settings.worker_processes == 1:
            return [self.process.pid if self.process is not None else None]
        with urllib.request.urlopen(f"{self.metrics_url}/healthz", timeout=5) as response:
            return [child["pid"] for child in json.loads(response.read())["workers"]]

    def scrape(self) -> str:
        with urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def kill(self) -> None:
        """SIGKILL: no chance to finish, publish or commit anything more."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait: the batch in hand is finished and committed; returns the exit status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)
