"""Small statistics for the benchmark: a figure is the median of its runs, with the min and max beside it."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """Median, min and max of the runs of one measurement."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Figure:
        if not values:
            raise ValueError("a figure needs at least one run")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def format(self, digits: int = 1, unit: str = "") -> str:
        """``"52.3 [50.1-54.0]"``: the median, then min-max of the runs."""
        return f"{self.median:,.{digits}f}{unit} [{self.low:,.{digits}f}-{self.high:,.{digits}f}]"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


@dataclass(frozen=True)
class Latency:
    """End-to-end latency percentiles of one run, in seconds."""

    p50: float
    p95: float
    p99: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Latency:
        return cls(percentile(values, 50), percentile(values, 95), percentile(values, 99))


def latency_figures(runs: Sequence[Latency]) -> tuple[Figure, Figure, Figure]:
    """Median (min, max) over runs of each percentile."""
    return (
        Figure.of([run.p50 for run in runs]),
        Figure.of([run.p95 for run in runs]),
        Figure.of([run.p99 for run in runs]),
    )
