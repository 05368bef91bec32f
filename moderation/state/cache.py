"""Redis for idempotent verdicts and cached encodings, and a worker that keeps going when Redis does not.

Decisions are deterministic for the same model, policy and input, so Redis is an optimisation and a dedup aid,
not a source of truth: while it is unreachable every call answers "nothing cached" (and stores nothing), the
outage is logged once and counted, and the connection is tried again after ``retry_after_s``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TypeVar

import redis

from moderation.observability.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")

PREFIX = "moderation"


class Cache:
    """Verdicts (SET NX), review-sent markers and encodings, each with a TTL."""

    def __init__(self, url: str | None, ttl_s: int, metrics: Metrics, retry_after_s: float = 5.0) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) if url else None
        self.ttl_s = ttl_s
        self.metrics = metrics
        self.retry_after_s = retry_after_s
        self._down_until = 0.0
        self._down = False

    @property
    def available(self) -> bool:
        return self.client is not None and time.monotonic() >= self._down_until

    def _call(self, kind: str, default: T, operation: redis.client.Pipeline) -> list[object] | T:
        if not self.available:
            return default
        try:
            result = operation.execute()
        except redis.RedisError as exc:
            self._down_until = time.monotonic() + self.retry_after_s
            self.metrics.cache_errors.labels(kind=kind).inc()
            if not self._down:
                self._down = True
                self.metrics.cache_up.set(0)
                log.warning("redis unreachable, continuing without dedup and caching: %s", exc)
            return default
        if self._down:
            self._down = False
            self.metrics.cache_up.set(1)
            log.warning("redis reachable again, dedup and caching resumed")
        return list(result)

    def _pipeline(self) -> redis.client.Pipeline:
        assert self.client is not None
        return self.client.pipeline(transaction=False)

    def claim_verdicts(self, items: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """Store each verdict with SET NX; returns what is stored: ours, or the one decided first."""
        if not items or not self.available:
            return [value for _, value in items]
        pipe = self._pipeline()
        for key, value in items:
            pipe.set(key, value, nx=True, ex=self.ttl_s)
            pipe.get(key)
        result = self._call("verdict", None, pipe)
        if result is None:
            return [value for _, value in items]
        stored = [result[i + 1] for i in range(0, len(result), 2)]
        claimed = [result[i] for i in range(0, len(result), 2)]
        replays = sum(1 for c in claimed if not c)
        # A claim that finds a verdict already stored lost a race with another worker (or a replay): counted apart
        # from the lookups before encoding, so verdict lookups are not counted twice.
        self.metrics.cache_lookups.labels(kind="verdict_claim", result="hit").inc(replays)
        self.metrics.cache_lookups.labels(kind="verdict_claim", result="miss").inc(len(items) - replays)
        return [s if isinstance(s, bytes) else v for s, (_, v) in zip(stored, items, strict=True)]

    def get_many(self, kind: str, keys: Sequence[str]) -> list[bytes | None]:
        """Cached values (None where absent or while Redis is down); hits and misses are counted by kind."""
        if not keys or not self.available:
            return [None] * len(keys)
        pipe = self._pipeline()
        for key in keys:
            pipe.get(key)
        result = self._call(kind, None, pipe)
        if result is None:
            return [None] * len(keys)
        values = [value if isinstance(value, bytes) else None for value in result]
        hits = sum(1 for value in values if value is not None)
        self.metrics.cache_lookups.labels(kind=kind, result="hit").inc(hits)
        self.metrics.cache_lookups.labels(kind=kind, result="miss").inc(len(keys) - hits)
        return values

    def put_many(self, kind: str, items: Sequence[tuple[str, bytes]]) -> None:
        """Store values with the TTL; silently skipped while Redis is down."""
        if not items or not self.available:
            return
        pipe = self._pipeline()
        for key, value in items:
            pipe.set(key, value, ex=self.ttl_s)
        self._call(kind, None, pipe)


def verdict_key(tenant: str, post_id: str, content_hash: str, model_version: str, policy_version: str) -> str:
    return f"{PREFIX}:verdict:{model_version}:{policy_version}:{tenant}:{content_hash}:{post_id}"


def review_sent_key(verdict_cache_key: str) -> str:
    return verdict_cache_key.replace(f"{PREFIX}:verdict:", f"{PREFIX}:review-sent:", 1)


def embedding_key(encoder_version: str, sha256: str) -> str:
    return f"{PREFIX}:embedding:{encoder_version}:{sha256}"
