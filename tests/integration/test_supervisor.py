"""``MODERATION_WORKER_PROCESSES=2`` on the real broker and cache: two worker processes behind one metrics port,
every post accounted for while one of them is killed and restarted, a clean stop, and a clear failure when the
children cannot start."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from moderation.demo.process import WorkerProcess
from moderation.demo.run import collect
from moderation.demo.samples import build_sample_stream, stores
from moderation.ingest.cli import produce_messages
from moderation.observability.server import free_port
from tests.conftest import FAST_GROUP, Stack
from tests.support import assert_every_post_accounted_for, wait_until

pytestmark = pytest.mark.integration


def series(text: str, name: str) -> dict[str, float]:
    """``name``'s values by worker label."""
    return {m[0]: float(m[1]) for m in re.findall(rf'^{name}\{{worker="(\d+)"\}} (\S+)$', text, re.M)}


def test_two_supervised_workers_lose_nothing_when_one_is_killed(stack: Stack, model_dir: Path, tmp_path: Path) -> None:
    settings = stack.unique_topics(
        model_dir=model_dir,
        metrics_port=free_port(above=2),
        worker_processes=2,
        stores={name: str(path) for name, path in stores().items()},
        **FAST_GROUP,
    )
    stream = build_sample_stream(60, seed=11, run_id="supervised")
    supervisor = WorkerProcess(settings, tmp_path / "supervisor.log").start()
    try:
        supervisor.wait_ready()  # the supervisor's /readyz: both children loaded and in the group
        pids = [pid for pid in supervisor.worker_pids() if pid is not None]
        assert len(pids) == 2, pids  # both running
        assert set(series(supervisor.scrape(), "moderation_posts_consumed_total")) == {"0", "1"}

        produce_messages(settings, stream.messages[:30], settings.topic_posts)
        os.kill(pids[1], signal.SIGKILL)  # mid-stream: its batches in hand are redelivered, not lost
        restarted = wait_until(
            lambda: series(supervisor.scrape(), "moderation_worker_restarts_total") == {"1": 1.0}, 30
        )
        assert restarted, "the killed worker process was not restarted within 30 s"
        supervisor.wait_ready()
        produce_messages(settings, stream.messages[30:], settings.topic_posts)
        outcome = collect(settings, stream, time.time())
        after = supervisor.scrape()
        new_pids = supervisor.worker_pids()
    finally:
        code = supervisor.stop()

    assert_every_post_accounted_for(stream, outcome)
    assert new_pids[0] == pids[0] and new_pids[1] not in (None, pids[1])
    assert sum(series(after, "moderation_posts_consumed_total").values()) >= 30  # the restarted child's count restarts
    assert code == 0
    for pid in (pids[0], new_pids[1]):  # the one kept and the restarted one (asserted running above)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # both children stopped with the supervisor


def test_children_that_cannot_start_stop_the_supervisor_with_the_reason(stack: Stack, tmp_path: Path) -> None:
    settings = stack.unique_topics(
        model_dir=tmp_path / "no-model-here", metrics_port=free_port(above=2), worker_processes=2
    )
    log = tmp_path / "supervisor.log"
    supervisor = WorkerProcess(settings, log).start()
    assert supervisor.process is not None
    try:
        code = supervisor.process.wait(timeout=180)
    finally:
        supervisor.kill()
    text = log.read_text()
    assert code == 2, text[-2000:]
    assert "exited 3 times in a row" in text and "before it became ready" in text, text[-2000:]
    assert str(tmp_path / "no-model-here") in text  # the children's own error, naming the missing folder


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux only")
def test_workers_stop_when_their_supervisor_is_killed(stack: Stack, model_dir: Path, tmp_path: Path) -> None:
    settings = stack.unique_topics(model_dir=model_dir, metrics_port=free_port(above=2), worker_processes=2)
    supervisor = WorkerProcess(settings, tmp_path / "supervisor.log").start()
    pids: list[int] = []
    try:
        supervisor.wait_ready()
        pids = [pid for pid in supervisor.worker_pids() if pid is not None]
        supervisor.kill()  # SIGKILL: no chance to pass anything on
        assert wait_until(lambda: not any(alive(pid) for pid in pids), 60), "orphaned workers kept running"
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (an orphan's zombie is reaped by init, so a gone one raises)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
