"""A tiny end-to-end run of the plain batched loop through the real broker: the benchmark's own machinery
(pause, backlog, resume, collect, paced half load) on a handful of posts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from moderation.bench.posts import STORE, Sources, default_sources
from moderation.bench.runner import GROUP, Bench, ContenderSpec, Plan
from moderation.settings import load_settings
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def test_plain_loop_on_a_few_posts(stack: Stack, model_dir: Path, tmp_path: Path) -> None:
    full = default_sources(photo_limit=4)
    sources = Sources(texts=full.texts[:50], photos=full.photos)
    settings = load_settings(
        **{
            **stack.settings.model_dump(),
            **GROUP,
            "model_dir": model_dir.resolve(),
            "stores": {STORE: str(tmp_path / "store")},
            "batch_max_size": 8,
            "torch_threads": 1,
        }
    )
    plan = replace(Plan.quick(), posts=6, half_posts=3, naive_posts=2, run_timeout_s=120)
    bench = Bench(settings, plan, sources, tmp_path, echo=lambda _: None)
    result = bench.run_contender(ContenderSpec("plain", "plain batched loop", "plain", "ref"))
    assert len(result.throughput) == 1 and result.throughput[0] > 0
    assert result.saturation[0].p50 <= result.saturation[0].p99
    assert result.half_rate == pytest.approx(plan.half_load * result.throughput[0])
    assert len(result.half) == 1
    assert result.dead_letters == 0 and result.duplicates == 0
    assert result.peak_rss_bytes and result.peak_rss_bytes[0] > 50 * 2**20
    assert not any((tmp_path / "store").iterdir())  # each run's images are removed after it
