"""The stream worker end to end on the real broker and cache: every shape of post, replays, crashes."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from moderation.contracts import SchemaName, validate
from moderation.demo.process import WorkerProcess
from moderation.demo.run import collect
from moderation.demo.samples import build_sample_stream, stores
from moderation.ingest.cli import produce_messages
from moderation.observability.server import free_port
from moderation.settings import Settings
from tests.conftest import Stack
from tests.support import (
    assert_committed_to_end,
    assert_every_post_accounted_for,
    decision,
    encoded_items,
    read_all,
    start_worker,
    wait_for_messages,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(stack: Stack, model_dir: Path) -> Settings:
    return stack.unique_topics(
        model_dir=model_dir,
        stores={name: str(path) for name, path in stores().items()},
        metrics_port=free_port(),
        batch_max_size=16,
        batch_max_wait_ms=20,
    )


def test_posts_of_every_shape_get_exactly_one_valid_outcome_and_replays_change_nothing(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    stream = build_sample_stream(90, seed=3, run_id="e2e")
    assert set(stream.shapes) == {"text", "image", "both", "neither", "several_images", "malformed"}
    worker = start_worker(settings, workers, tmp_path / "worker.log")
    produce_messages(settings, stream.messages, settings.topic_posts)
    first = collect(settings, stream, 0.0)
    assert_every_post_accounted_for(stream, first)
    assert first.duplicates == 0

    verdicts = read_all(settings, settings.topic_verdicts)
    dead_letters = read_all(settings, settings.topic_dead_letter)
    reviews = read_all(settings, settings.topic_review)
    assert len(verdicts) == stream.valid_posts and len(dead_letters) == len(stream.expected_rejections)
    for document in verdicts + reviews:
        validate(SchemaName.VERDICT, document)
    for document in dead_letters:
        validate(SchemaName.DEAD_LETTER, document)
    assert all(r["action"] == "review" for r in reviews)
    assert len(reviews) == sum(1 for v in verdicts if v["action"] == "review")
    assert any(v["modalities_present"] == [] for v in verdicts)
    assert any(len(v["modalities_present"]) == 2 for v in verdicts)

    encoded_before = encoded_items(worker.scrape())
    produce_messages(settings, stream.messages, settings.topic_posts)
    wait_for_messages(settings, settings.topic_verdicts, 2 * stream.valid_posts)
    replayed = read_all(settings, settings.topic_verdicts)
    assert len(replayed) == 2 * stream.valid_posts
    by_post: dict[str, list[dict[str, object]]] = {}
    for verdict in replayed:
        by_post.setdefault(str(verdict["post_id"]), []).append(decision(verdict))
    assert all(first_copy == second_copy for first_copy, second_copy in by_post.values())
    metrics_text = worker.scrape()
    assert encoded_items(metrics_text) == encoded_before, "the replay encoded something again"
    assert re.search(r'moderation_cache_lookups_total\{kind="verdict",result="hit"\} (\d+)', metrics_text)
    assert len(read_all(settings, settings.topic_review)) == len(reviews), "a replay duplicated moderator work"
    assert worker.stop() == 0
    assert_committed_to_end(settings)


@pytest.mark.parametrize("seed", [11, 23])
def test_a_worker_killed_at_seeded_points_and_restarted_loses_nothing(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    stream = build_sample_stream(
        160, seed=seed, run_id=f"crash{seed}", shapes=(("text", 0.85), ("neither", 0.05), ("malformed", 0.10))
    )
    # First life: dies between publishing a batch and committing it.
    kill_batch = rng.randint(2, 4)
    start_worker(settings, workers, tmp_path / "life1.log", debug_kill_before_commit_batch=kill_batch)
    produce_messages(settings, stream.messages, settings.topic_posts)
    assert workers[-1].process is not None and workers[-1].process.wait(timeout=120) == -9
    # Second life: SIGKILLed from outside after a seeded number of acknowledged verdicts.
    seen_before = len(read_all(settings, settings.topic_verdicts))
    second = start_worker(settings, workers, tmp_path / "life2.log")
    wait_for_messages(settings, settings.topic_verdicts, seen_before + rng.randint(5, 30))
    second.kill()
    # Third life runs to the end.
    third = start_worker(settings, workers, tmp_path / "life3.log")
    outcome = collect(settings, stream, 0.0)
    assert_every_post_accounted_for(stream, outcome)
    verdicts = read_all(settings, settings.topic_verdicts)
    first_decision: dict[str, dict[str, object]] = {}
    for verdict in verdicts:
        first_decision.setdefault(str(verdict["post_id"]), decision(verdict))
        assert decision(verdict) == first_decision[str(verdict["post_id"])], "contradictory verdicts"
    assert third.stop() == 0
    assert_committed_to_end(settings)
