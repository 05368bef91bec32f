"""Redis for idempotent verdicts and cached encodings, and a worker that keeps going when Redis does not.

Decisions are deterministic for the same model, policy and input, so Redis is an optimisation and a dedup aid,
not a source of truth: while it is unreachable every call answers "nothing cached" (and stores nothing), the
outage is logged once and counted, and the connection is tried again after ``retry_after_s``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from redis.commands.core import Script

from moderation.observability.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")

PREFIX = "moderation"


# One script call stores a whole batch: redis-py spends more host time packing and parsing one command than the
# server spends running it, so a batch of 256 verdicts as 512 pipelined commands cost the worker more than Redis.
_CLAIM_SCRIPT = """
local stored = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[i + 1], 'NX', 'EX', ARGV[1]) then
    stored[i] = false
  else
    stored[i] = redis.call('GET', key)
  end
end
return stored
"""
_PUT_SCRIPT = """
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1])
end
return #KEYS
"""


class Cache:
    """Verdicts (SET NX), review-sent markers and encodings, each with a TTL.

    Each call is one command for the whole batch: ``MGET`` for lookups, a Lua script (``EVALSHA``, loaded again by
    redis-py after a server restart) for writes. The keys of one call must live on one server, as they do on a
    standalone Redis or Valkey, or a replicated one behind a single primary.
    """

    def __init__(self, url: str | None, ttl_s: int, metrics: Metrics, retry_after_s: float = 5.0) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) if url else None
        self.ttl_s = ttl_s
        self.metrics = metrics
        self.retry_after_s = retry_after_s
        self._down_until = 0.0
        self._down = False
        self._claim = self.client.register_script(_CLAIM_SCRIPT) if self.client else None
        self._put = self.client.register_script(_PUT_SCRIPT) if self.client else None

    @property
    def available(self) -> bool:
        return self.client is not None and time.monotonic() >= self._down_until

    def _call(self, kind: str, operation: Callable[[], T]) -> T | None:
        """``operation()``'s reply, or None while Redis is down or when the call fails (then counted, logged once,
        and not tried again for ``retry_after_s``)."""
        if not self.available:
            return None
        try:
            result = operation()
        except redis.RedisError as exc:
            self._down_until = time.monotonic() + self.retry_after_s
            self.metrics.cache_errors.labels(kind=kind).inc()
            if not self._down:
                self._down = True
                self.metrics.cache_up.set(0)
                log.warning("redis unreachable, continuing without dedup and caching: %s", exc)
            return None
        if self._down:
            self._down = False
            self.metrics.cache_up.set(1)
            log.warning("redis reachable again, dedup and caching resumed")
        return result

    def _script(self, script: Script | None, items: Sequence[tuple[str, bytes]]) -> Callable[[], Any]:
        assert script is not None
        keys = [key for key, _ in items]
        return lambda: script(keys=keys, args=[self.ttl_s, *(value for _, value in items)])

    def claim_verdicts(self, items: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """Store each verdict with SET NX; returns what is stored: ours, or the one decided first."""
        if not items or not self.available:
            return [value for _, value in items]
        earlier = self._call("verdict", self._script(self._claim, items))
        if earlier is None:
            return [value for _, value in items]
        replays = sum(1 for value in earlier if value is not None)
        # A claim that finds a verdict already stored lost a race with another worker (or a replay): counted apart
        # from the lookups before encoding, so verdict lookups are not counted twice.
        self.metrics.cache_lookups.labels(kind="verdict_claim", result="hit").inc(replays)
        self.metrics.cache_lookups.labels(kind="verdict_claim", result="miss").inc(len(items) - replays)
        return [e if isinstance(e, bytes) else v for e, (_, v) in zip(earlier, items, strict=True)]

    def get_many(self, kind: str, keys: Sequence[str]) -> list[bytes | None]:
        """Cached values (None where absent or while Redis is down); hits and misses are counted by kind."""
        if not keys or not self.available:
            return [None] * len(keys)
        assert self.client is not None
        client = self.client
        result = self._call(kind, lambda: client.mget(keys))
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
        self._call(kind, self._script(self._put, items))


def verdict_key(tenant: str, post_id: str, content_hash: str, model_version: str, policy_version: str) -> str:
    return f"{PREFIX}:verdict:{model_version}:{policy_version}:{tenant}:{content_hash}:{post_id}"


def review_sent_key(verdict_cache_key: str) -> str:
    return verdict_cache_key.replace(f"{PREFIX}:verdict:", f"{PREFIX}:review-sent:", 1)


def embedding_key(encoder_version: str, sha256: str) -> str:
    return f"{PREFIX}:embedding:{encoder_version}:{sha256}"
