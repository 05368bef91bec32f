"""The reliability suite's own broker and cache (faults are injected into them), and its closing table."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from moderation.embedded.stack import StackState, down, up
from moderation.settings import Settings, load_settings
from tests.conftest import FAST_GROUP

RESULTS: list[FaultRun] = []


@dataclass
class FaultRun:
    """One row of the closing table."""

    scenario: str
    faults: str
    sent: int = 0
    verdicts: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    contradictory: int = 0
    duplicates: int = 0
    peak_rss_mb: float = 0.0
    recovery_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class FaultStack:
    """A private embedded stack: pausing its broker or cache disturbs no other test."""

    state: StackState
    settings: Settings


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    state_dir: Path = tmp_path_factory.mktemp("fault-stack")
    settings = load_settings(
        **FAST_GROUP, state_dir=state_dir, embedded_kafka_port=0, embedded_redis_port=0, topic_partitions=4
    )
    state, _ = up(settings)
    settings = load_settings(
        **{**settings.model_dump(), "kafka_bootstrap": state.kafka_bootstrap, "redis_url": state.redis_url}
    )
    try:
        yield FaultStack(state, settings)
    finally:
        down(settings)


@pytest.fixture
def record_run() -> Iterator[list[FaultRun]]:
    """Rows a test adds to the closing table."""
    rows: list[FaultRun] = []
    yield rows
    RESULTS.extend(rows)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("reliability: faults injected and what came out")
    write(
        f"{'scenario':<22}{'faults':<44}{'sent':>6}{'verdicts':>9}{'lost':>6}{'contra':>7}{'dupes':>7}"
        f"{'RSS MB':>8}  recovery s / dead letters"
    )
    for run in RESULTS:
        recovery = ",".join(f"{r:.1f}" for r in run.recovery_s) or "-"
        dead = ",".join(f"{k}={v}" for k, v in sorted(run.dead_letters.items())) or "-"
        write(
            f"{run.scenario:<22}{run.faults:<44}{run.sent:>6}{run.verdicts:>9}{run.lost:>6}{run.contradictory:>7}"
            f"{run.duplicates:>7}{run.peak_rss_mb:>8.0f}  {recovery} / {dead}"
        )
