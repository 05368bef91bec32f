"""A worker on the embedded stack, scraped over HTTP: counters and histograms move as posts flow, lag drains,
and ``/readyz`` turns true only once the worker joined its group."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from moderation.demo.process import WorkerProcess
from moderation.demo.run import collect
from moderation.demo.samples import build_sample_stream, stores
from moderation.ingest.cli import produce_messages
from moderation.observability.server import free_port
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in values.items() if n == name and set(labels.items()) <= set(ls))


def readyz(url: str) -> int | None:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def test_metrics_move_by_the_expected_amounts_and_lag_drains(
    stack: Stack,
    model_dir: Path,
    tmp_path: Path,
) -> None:
    settings = stack.unique_topics(
        model_dir=model_dir, metrics_port=free_port(), stores={name: str(path) for name, path in stores().items()}
    )
    stream = build_sample_stream(40, seed=5, run_id="obs", shapes=(("text", 0.6), ("neither", 0.2), ("malformed", 0.2)))
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        statuses: list[int] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and (not statuses or statuses[-1] != 200):
            status = readyz(worker.metrics_url)
            if status is not None and (not statuses or statuses[-1] != status):
                statuses.append(status)
            time.sleep(0.05)
        assert statuses == [503, 200], statuses
        with urllib.request.urlopen(f"{worker.metrics_url}/healthz", timeout=2) as response:
            assert response.status == 200

        before = samples(worker.scrape())
        produce_messages(settings, stream.messages, settings.topic_posts)
        outcome = collect(settings, stream, 0.0)
        assert outcome.seen() == len(stream.messages)
        time.sleep(2.5)  # two observation rounds: lag gauges refresh once a second
        after = samples(worker.scrape())
    finally:
        worker.stop()

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("moderation_posts_consumed_total") == len(stream.messages)
    assert moved("moderation_verdicts_total") == stream.valid_posts
    assert moved("moderation_dead_letters_total") == len(stream.expected_rejections)
    for reason in {r.value for r in stream.expected_rejections.values()}:
        expected = sum(1 for r in stream.expected_rejections.values() if r.value == reason)
        assert moved("moderation_dead_letters_total", reason=reason) == expected
    assert moved("moderation_end_to_end_seconds_count") == stream.valid_posts
    assert moved("moderation_stage_seconds_count", stage="prepare") >= 1
    assert moved("moderation_stage_seconds_count", stage="publish") >= 1
    # one verdict lookup per post that passed decoding: the valid ones and those refused later, at image decode
    decoded = stream.valid_posts + sum(1 for r in stream.expected_rejections.values() if r.value == "image_corrupt")
    assert moved("moderation_cache_lookups_total", kind="verdict") == decoded
    assert total(after, "moderation_model_info") == 1
    lag = {
        ls: v
        for (n, ls), v in after.items()
        if n in ("moderation_consumer_lag_messages", "moderation_consumer_lag_seconds")
    }
    assert lag and all(v == 0 for v in lag.values()), lag
    assert total(after, "moderation_in_flight_posts") == 0
