"""The Redis cache on the real server, and the worker's behaviour when Redis is unreachable."""

from __future__ import annotations

import uuid

import pytest

from moderation.observability.metrics import Metrics
from moderation.observability.server import free_port
from moderation.state.cache import Cache, embedding_key, review_sent_key, verdict_key
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def test_the_first_verdict_wins_and_replays_get_it_back(stack: Stack) -> None:
    metrics = Metrics()
    cache = Cache(stack.redis_url, ttl_s=60, metrics=metrics)
    key = verdict_key("acme", f"p-{uuid.uuid4().hex}", "0" * 64, "model-1", "policy-1")
    assert cache.claim_verdicts([(key, b"first")]) == [b"first"]
    assert cache.claim_verdicts([(key, b"second")]) == [b"first"]
    assert cache.get_many("verdict", [key, key + "x"]) == [b"first", None]
    assert metrics.cache_lookups.labels(kind="verdict_claim", result="hit")._value.get() == 1
    assert metrics.cache_lookups.labels(kind="verdict", result="hit")._value.get() == 1
    assert 0 < cache.client.ttl(key) <= 60  # type: ignore[union-attr]
    assert review_sent_key(key).startswith("moderation:review-sent:")


def test_a_batch_claims_new_keys_and_returns_earlier_verdicts_even_after_the_scripts_were_flushed(
    stack: Stack,
) -> None:
    cache = Cache(stack.redis_url, ttl_s=60, metrics=Metrics())
    taken, fresh = (verdict_key("acme", f"p-{uuid.uuid4().hex}", "0" * 64, "m", "p") for _ in range(2))
    assert cache.claim_verdicts([(taken, b"first")]) == [b"first"]
    cache.client.script_flush()  # type: ignore[union-attr]  # as after a Redis restart: redis-py loads it again
    assert cache.claim_verdicts([(taken, b"again"), (fresh, b"mine")]) == [b"first", b"mine"]
    assert cache.get_many("verdict", [fresh, taken]) == [b"mine", b"first"]
    assert cache.available


def test_values_round_trip_with_their_ttl(stack: Stack) -> None:
    cache = Cache(stack.redis_url, ttl_s=30, metrics=Metrics())
    key = embedding_key("enc@1", uuid.uuid4().hex)
    cache.put_many("text_embedding", [(key, b"\x00\x01")])
    assert cache.get_many("text_embedding", [key]) == [b"\x00\x01"]
    assert 0 < cache.client.ttl(key) <= 30  # type: ignore[union-attr]


def test_an_unreachable_redis_answers_nothing_cached_and_is_counted() -> None:
    metrics = Metrics()
    cache = Cache(f"redis://127.0.0.1:{free_port()}/0", ttl_s=30, metrics=metrics, retry_after_s=60)
    assert cache.claim_verdicts([("k", b"v")]) == [b"v"]
    assert cache.get_many("verdict", ["k"]) == [None]
    cache.put_many("verdict", [("k", b"v")])
    assert not cache.available
    assert metrics.cache_up._value.get() == 0
    assert metrics.cache_errors.labels(kind="verdict")._value.get() == 1
