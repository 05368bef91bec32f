"""Known-bad media matching in the worker: an in-memory index of the lists, kept in step with Redis.

:class:`HashMatcher` is what the pipeline uses. Once per batch :meth:`HashMatcher.refresh` reads the lists'
version (one GET) and, only when it changed, reloads every entry and swaps in a new :class:`ListIndex` (in the
batch's own thread while reloads are quick, in a background thread for large lists, whose reload takes seconds:
see :meth:`HashMatcher.refresh`). While Redis is unreachable the last index stays in force (an empty one if Redis
was never reached), the outage is logged once and counted in ``moderation_cache_errors_total{kind="hashlist"}``,
and Redis is tried again after a few seconds. :meth:`HashMatcher.match` then checks each image of a post: its
SHA-256 against the exact entries first (a dict lookup), and only when that finds nothing and PDQ entries exist,
its PDQ against the PDQ index (decoding the image within the worker's limits; an image that cannot be decoded is
left for the encoders to reject, and one whose PDQ quality is below ``MODERATION_HASH_MIN_QUALITY`` is not
matched perceptually).

:meth:`HashMatcher.withhold_reason` screens any message about to be copied into a dead-letter record, so known-bad
media is never copied there, even when the post failed before matching ran (a malformed post with an inline
image, a worker error). Nothing here logs media bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis

from moderation.decode.images import ImageLimits, sniff_content_type
from moderation.errors import DecodeError
from moderation.hashlists.entries import HashEntry, HashKind
from moderation.hashlists.index import PdqIndex
from moderation.hashlists.pdq import hex_to_words, pdq_of_bytes
from moderation.hashlists.store import HashListStore, Row, Snapshot
from moderation.hashlists.verdict import WITHHELD_REASON, ImageMatch, PostMatch
from moderation.observability.metrics import Metrics
from moderation.settings import Settings
from moderation.types import DecodedPost, RawRecord, Rejection

log = logging.getLogger(__name__)

HEX_CHARS = 64
SYNC_RELOAD_MAX_S = 0.5  # reloads slower than this run in a background thread
SCREEN_FAILED_REASON = "known_bad_screening_failed"  # withheld because the screen itself failed
MIN_BASE64_CHARS = 16  # shorter strings are never screened as media
MAX_SCREENED_IMAGES = 64  # embedded images a dead-letter screen hashes with PDQ; more: withheld unchecked


@dataclass(frozen=True)
class ListIndex:
    """An immutable snapshot of every list: exact entries by SHA-256, PDQ entries in a :class:`PdqIndex`.

    Entries are kept as Redis stored them and parsed only when they match, so a reload of a large list costs
    little more than reading it.
    """

    version: int
    exact: dict[str, tuple[Row, ...]]
    pdq_rows: tuple[Row, ...]
    pdq: PdqIndex
    counts: dict[HashKind, int] = field(default_factory=dict)

    @classmethod
    def build(cls, snapshot: Snapshot) -> ListIndex:
        exact: dict[str, list[Row]] = {}
        pdq_rows: list[Row] = []
        for row in snapshot.rows:
            if row[0] is HashKind.SHA256:
                exact.setdefault(row[1][-HEX_CHARS:].decode(), []).append(row)
            else:
                pdq_rows.append(row)
        values = b"".join(name[-HEX_CHARS:] for _, name, _ in pdq_rows)
        words = np.frombuffer(bytes.fromhex(values.decode()), dtype=np.uint64).reshape(len(pdq_rows), 4)
        return cls(
            snapshot.version,
            {digest: tuple(group) for digest, group in exact.items()},
            tuple(pdq_rows),
            PdqIndex(words),
            {HashKind.SHA256: sum(len(g) for g in exact.values()), HashKind.PDQ: len(pdq_rows)},
        )

    @classmethod
    def empty(cls) -> ListIndex:
        return cls.build(Snapshot(0, ()))

    @property
    def size(self) -> int:
        return sum(self.counts.values())

    def match_exact(self, image_index: int, sha256: str) -> list[ImageMatch]:
        """One match per list holding this exact SHA-256, sorted by list."""
        entries = sorted((_entry(row) for row in self.exact.get(sha256, ())), key=lambda e: e.list)
        return [ImageMatch(image_index, e.list, e.category, HashKind.SHA256, 0, e.value) for e in entries]

    def match_pdq(self, image_index: int, pdq_hex: str, max_distance: int) -> list[ImageMatch]:
        """Per list, its closest PDQ entry within ``max_distance`` (ties: the smaller hash), sorted by list."""
        ids, distances = self.pdq.query(hex_to_words([pdq_hex])[0], max_distance)
        best: dict[str, tuple[int, str, HashEntry]] = {}
        for entry_id, distance in zip(ids.tolist(), distances.tolist(), strict=True):
            entry = _entry(self.pdq_rows[entry_id])
            candidate = (int(distance), entry.value, entry)
            if entry.list not in best or candidate[:2] < best[entry.list][:2]:
                best[entry.list] = candidate
        return [
            ImageMatch(image_index, name, entry.category, HashKind.PDQ, distance, entry.value)
            for name, (distance, _, entry) in sorted(best.items())
        ]


def _entry(row: Row) -> HashEntry:
    kind, name, stored = row
    return HashEntry.from_stored(kind, name.decode(), stored)


class HashMatcher:
    """The pipeline's view of the hash lists; used from one thread (the worker's model thread)."""

    def __init__(
        self,
        store: HashListStore | None,
        limits: ImageLimits,
        metrics: Metrics,
        *,
        max_distance: int = 31,
        min_quality: int = 50,
        retry_after_s: float = 5.0,
        sync_reload_max_s: float = SYNC_RELOAD_MAX_S,
    ) -> None:
        self.store = store
        self.limits = limits
        self.metrics = metrics
        self.max_distance = max_distance
        self.min_quality = min_quality
        self.retry_after_s = retry_after_s
        self.index = ListIndex.empty()
        self.sync_reload_max_s = sync_reload_max_s
        self._loaded = False
        self._down = False
        self._retry_at = 0.0
        self._last_load_s = 0.0
        self._reloading = False
        self._pending: ListIndex | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, redis_url: str | None, metrics: Metrics) -> HashMatcher:
        """A matcher with the lists already loaded (so a worker is never ready without them), when Redis answers."""
        store = HashListStore.from_url(redis_url, settings.hash_list_namespace) if redis_url else None
        matcher = cls(
            store,
            ImageLimits.from_settings(settings),
            metrics,
            max_distance=settings.hash_match_max_distance,
            min_quality=settings.hash_min_quality,
        )
        matcher.refresh()
        return matcher

    # --- keeping the index current ------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Once per batch: read the lists' version (one GET) and reload them when it changed; True when a new
        index came into force.

        A reload runs in this thread while reloads are quick (the first load, and lists whose last load took
        under ``sync_reload_max_s``), so the batch at hand already sees the change; a slower one (hundreds of
        thousands of entries) runs in a background thread while matching goes on against the current index,
        and the new index comes into force at the first batch after it is built.
        """
        swapped = self._swap_pending()
        if self.store is None or self._reloading or time.monotonic() < self._retry_at:
            return swapped
        try:
            version = self.store.version()
        except redis.RedisError as exc:
            self._failed(exc)
            return swapped
        self._recovered()
        if self._loaded and version == self.index.version:
            return swapped
        if self._loaded and self._last_load_s > self.sync_reload_max_s:
            self._reloading = True
            threading.Thread(target=self._reload_in_background, name="hashlist-reload", daemon=True).start()
            return swapped
        index = self._load()
        if index is None:
            return swapped
        self._install(index)
        return True

    def wait_for_reload(self, timeout_s: float = 60.0) -> None:
        """Block until a background reload (if any) has finished; the next :meth:`refresh` installs it."""
        deadline = time.monotonic() + timeout_s
        while self._reloading and time.monotonic() < deadline:
            time.sleep(0.01)

    def _load(self) -> ListIndex | None:
        assert self.store is not None
        started = time.perf_counter()
        try:
            snapshot = self.store.snapshot()
        except redis.RedisError as exc:
            self._failed(exc)
            return None
        index = ListIndex.build(snapshot)
        self._last_load_s = time.perf_counter() - started
        return index

    def _reload_in_background(self) -> None:
        try:
            index = self._load()
            with self._lock:
                self._pending = index
        except Exception:
            log.exception("reloading the hash lists failed; matching against the last lists loaded")
        finally:
            self._reloading = False

    def _swap_pending(self) -> bool:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return False
        self._install(pending)
        return True

    def _install(self, index: ListIndex) -> None:
        self.index = index
        self._loaded = True
        for kind, count in index.counts.items():
            self.metrics.hash_list_entries.labels(kind=kind.value).set(count)
        self.metrics.hash_list_version.set(index.version)
        log.info(
            "hash lists loaded",
            extra={
                "hash_list_version": index.version,
                "sha256_entries": index.counts[HashKind.SHA256],
                "pdq_entries": index.counts[HashKind.PDQ],
                "load_s": round(self._last_load_s, 3),
            },
        )

    def _failed(self, exc: redis.RedisError) -> None:
        self._retry_at = time.monotonic() + self.retry_after_s
        self.metrics.cache_errors.labels(kind="hashlist").inc()
        if not self._down:
            self._down = True
            log.warning(
                "hash lists unreachable in redis; matching against the last lists loaded (%d entries): %s",
                self.index.size,
                exc,
            )

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            log.warning("hash lists reachable again in redis")

    # --- matching -----------------------------------------------------------------------------------------
    def match(self, post: DecodedPost, *, count: bool = True) -> PostMatch | None:
        """The post's known-bad matches, or None; each match is counted in ``moderation_hash_matches_total``."""
        index = self.index
        if index.size == 0 or not post.images:
            return None
        found: list[ImageMatch] = []
        for image_index, image in enumerate(post.images):
            matches = index.match_exact(image_index, image.sha256)
            if not matches and index.pdq.size:
                pdq = self._pdq(image.data, image.declared_type)
                if pdq is not None:
                    matches = index.match_pdq(image_index, pdq, self.max_distance)
            found.extend(matches)
        if not found:
            return None
        if count:
            for match in found:
                self.metrics.hash_matches.labels(list=match.list, kind=match.kind.value).inc()
            log.debug(
                "known-bad media matched",
                extra={"post_id": post.post_id, "matches": [m.rule for m in found]},
            )
        return PostMatch(tuple(found), len(post.images))

    def match_many(self, posts: Sequence[DecodedPost]) -> list[PostMatch | None]:
        started = time.perf_counter()
        matches = [self.match(post) for post in posts]
        if self.index.size:
            self.metrics.stage_seconds.labels(stage="hash_match").observe(time.perf_counter() - started)
        return matches

    def _pdq(self, data: bytes, declared_type: str | None) -> str | None:
        """The image's PDQ, or None when it cannot be decoded or its quality is too low to trust."""
        try:
            pdq = pdq_of_bytes(data, self.limits, declared_type)
        except DecodeError:
            return None
        return pdq.hex if pdq.quality >= self.min_quality else None

    def matches_raw(self, candidates: Sequence[bytes]) -> bool:
        """Whether any of these byte strings is listed media: every one by SHA-256, and those that look like an
        image (magic bytes) by PDQ too. More than :data:`MAX_SCREENED_IMAGES` images raise
        :class:`ScreenTooCostly`: the caller withholds what it cannot afford to check."""
        index = self.index
        if any(index.match_exact(0, hashlib.sha256(data).hexdigest()) for data in candidates):
            return True
        if not index.pdq.size:
            return False
        images = [data for data in candidates if sniff_content_type(data) is not None]
        if len(images) > MAX_SCREENED_IMAGES:
            raise ScreenTooCostly(f"{len(images)} embedded images, over {MAX_SCREENED_IMAGES}")
        for data in images:
            pdq = self._pdq(data, None)
            if pdq is not None and index.match_pdq(0, pdq, self.max_distance):
                return True
        return False

    # --- dead letters -------------------------------------------------------------------------------------
    def withhold_reason(self, record: RawRecord, decode: Callable[[RawRecord], DecodedPost | Rejection]) -> str | None:
        """``known_bad_media`` when the message carries media on a list (its original must not be copied into a
        dead-letter record), ``known_bad_screening_failed`` when the screen itself failed, else None."""
        if self.index.size == 0:
            return None
        try:
            outcome = decode(record)
            if isinstance(outcome, DecodedPost):
                matched = self.match(outcome, count=False) is not None
            else:
                matched = self.matches_raw(embedded_media(record.value))
        except Exception as exc:  # a screen that fails must not copy what it could not check
            log.warning("known-bad screening of a dead-letter record failed: %s", type(exc).__name__)
            return SCREEN_FAILED_REASON
        return WITHHELD_REASON if matched else None


class ScreenTooCostly(Exception):
    """A message carries more embedded images than a dead-letter screen checks perceptually."""


_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]{%d,}={0,2}" % MIN_BASE64_CHARS)


def embedded_media(value: bytes) -> list[bytes]:
    """Byte strings a message may carry as media: the message itself, and every base64 string inside it when it
    is JSON (wherever it sits: a malformed post is screened too). Bounded by the message's size."""
    found = [value]
    try:
        document: Any = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        # not JSON (truncated, damaged): every base64-looking run of its bytes is screened instead
        document = [run.decode() for run in _BASE64_RUN.findall(value)]
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and len(item) >= MIN_BASE64_CHARS:
            try:
                found.append(base64.b64decode(item, validate=False))
            except (binascii.Error, ValueError):
                continue
    return found
