"""Hash lists in Redis: one Redis hash per kind, and a version counter that every change increments.

Keys, under the namespace ``MODERATION_HASH_LIST_NAMESPACE`` (``default``)::

    moderation:hashlist:<namespace>:sha256    HASH   "<list>:<sha256 hex>" -> entry JSON
    moderation:hashlist:<namespace>:pdq       HASH   "<list>:<pdq hex>"    -> entry JSON
    moderation:hashlist:<namespace>:version   STRING integer, INCR after every add, import or removal

Workers read ``version`` once per batch (one GET) and reload the entries only when it changed, so a change made
with ``moderation hashes`` reaches every running worker at its next batch, without a restart. A reload reads the
version first and the entries after (HSCAN, so Redis never blocks on a large list); a change that lands during
the scan has bumped the version again, and the next batch reloads once more.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import redis

from moderation.errors import ConfigError
from moderation.hashlists.entries import HashEntry, HashKind, check_list_name

PREFIX = "moderation:hashlist"
WRITE_CHUNK = 5_000
SCAN_COUNT = 10_000


@dataclass(frozen=True)
class ListSummary:
    """One list as ``moderation hashes list`` shows it."""

    name: str
    categories: tuple[str, ...]
    counts: dict[HashKind, int]
    sources: tuple[str, ...]
    first_added: str
    last_added: str


Row = tuple[HashKind, bytes, bytes]  # kind, Redis field ("<list>:<value>"), stored JSON: parsed only when needed


@dataclass(frozen=True)
class Snapshot:
    """Every entry as stored, and the version read before they were."""

    version: int
    rows: tuple[Row, ...]

    @classmethod
    def of(cls, version: int, entries: Iterable[HashEntry]) -> Snapshot:
        return cls(version, tuple((e.kind, e.field.encode(), e.stored()) for e in entries))

    @property
    def entries(self) -> list[HashEntry]:
        return [HashEntry.from_stored(kind, name.decode(), stored) for kind, name, stored in self.rows]


@dataclass
class _Tally:
    categories: set[str] = field(default_factory=set)
    counts: dict[HashKind, int] = field(default_factory=lambda: dict.fromkeys(HashKind, 0))
    sources: set[str] = field(default_factory=set)
    first: str = ""
    last: str = ""

    def count(self, entry: HashEntry) -> None:
        self.categories.add(entry.category)
        self.counts[entry.kind] += 1
        self.sources.add(entry.source)
        self.first = min(self.first, entry.added_at) if self.first else entry.added_at
        self.last = max(self.last, entry.added_at)

    def summary(self, name: str) -> ListSummary:
        return ListSummary(
            name, tuple(sorted(self.categories)), dict(self.counts), tuple(sorted(self.sources)), self.first, self.last
        )


class HashListStore:
    """Reads and changes the hash lists of one namespace; every change increments the version."""

    def __init__(self, client: redis.Redis, namespace: str = "default") -> None:
        check_list_name(namespace)
        self.client = client
        self.namespace = namespace

    @classmethod
    def from_url(cls, url: str, namespace: str = "default", timeout_s: float = 2.0) -> HashListStore:
        return cls(redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s), namespace)

    def key(self, kind: HashKind) -> str:
        return f"{PREFIX}:{self.namespace}:{kind.value}"

    @property
    def version_key(self) -> str:
        return f"{PREFIX}:{self.namespace}:version"

    # --- reading ------------------------------------------------------------------------------------------
    def version(self) -> int:
        """The change counter (0 before any change): one GET."""
        value = self.client.get(self.version_key)
        return int(value) if value is not None else 0  # type: ignore[arg-type]

    def entries(self, list_name: str | None = None, kind: HashKind | None = None) -> Iterator[HashEntry]:
        """Every entry, or those of one list and/or kind, read with HSCAN (in no particular order)."""
        match = f"{list_name}:*" if list_name is not None else None
        for hash_kind in (kind,) if kind is not None else tuple(HashKind):
            for raw, stored in self.client.hscan_iter(self.key(hash_kind), match=match, count=SCAN_COUNT):
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                yield HashEntry.from_stored(hash_kind, name, stored)

    def snapshot(self) -> Snapshot:
        """The version, then every entry unparsed (HSCAN): what a worker's index is built from."""
        version = self.version()
        rows: list[Row] = []
        for kind in HashKind:
            rows.extend(
                (kind, name, stored) for name, stored in self.client.hscan_iter(self.key(kind), count=SCAN_COUNT)
            )
        return Snapshot(version, tuple(rows))

    def counts(self) -> dict[HashKind, int]:
        """Entries per kind (HLEN each)."""
        pipe = self.client.pipeline(transaction=False)
        for kind in HashKind:
            pipe.hlen(self.key(kind))
        return {kind: int(n) for kind, n in zip(HashKind, pipe.execute(), strict=True)}

    def summaries(self) -> list[ListSummary]:
        """Per list: categories, entry counts per kind, sources, first and last added-at; sorted by name."""
        lists: dict[str, _Tally] = {}
        for entry in self.entries():
            lists.setdefault(entry.list, _Tally()).count(entry)
        return [lists[name].summary(name) for name in sorted(lists)]

    # --- changing -----------------------------------------------------------------------------------------
    def add(self, entries: Iterable[HashEntry]) -> int:
        """Store entries (an entry already in its list is replaced); returns how many were new.

        Written in chunks, then the version is incremented once, so workers reload once per call.
        """
        added = 0
        written = False
        batch: list[HashEntry] = []
        for entry in entries:
            batch.append(entry)
            if len(batch) >= WRITE_CHUNK:
                added += self._write(batch)
                written = True
                batch = []
        if batch:
            added += self._write(batch)
            written = True
        if written:
            self.client.incr(self.version_key)
        return added

    def _write(self, batch: list[HashEntry]) -> int:
        by_kind: dict[HashKind, dict[str, bytes]] = {}
        for entry in batch:
            by_kind.setdefault(entry.kind, {})[entry.field] = entry.stored()
        pipe = self.client.pipeline(transaction=False)
        for kind, mapping in by_kind.items():
            pipe.hset(self.key(kind), mapping=mapping)  # type: ignore[arg-type]
        return sum(int(n) for n in pipe.execute())

    def remove(
        self,
        list_name: str,
        *,
        values: Iterable[tuple[HashKind, str]] = (),
        media_sha256: Iterable[str] = (),
        whole_list: bool = False,
    ) -> int:
        """Remove entries of one list: given (kind, value) pairs, every entry made from the given images
        (their SHA-256: the exact entry and the PDQ entries with that ``media_sha256``), or the whole list.
        Returns how many were removed; the version is incremented when any was."""
        check_list_name(list_name)
        fields: dict[HashKind, set[str]] = {kind: set() for kind in HashKind}
        for kind, value in values:
            fields[kind].add(f"{list_name}:{value.lower()}")
        media = {m.lower() for m in media_sha256}
        for digest in media:
            fields[HashKind.SHA256].add(f"{list_name}:{digest}")
        if media or whole_list:
            for entry in self.entries(list_name):
                if whole_list or entry.media_sha256 in media:
                    fields[entry.kind].add(entry.field)
        if not any(fields.values()):
            if not (media or whole_list):
                raise ConfigError("nothing to remove: give hashes, images or --all")
            return 0
        pipe = self.client.pipeline(transaction=True)
        for kind, names in fields.items():
            if names:
                pipe.hdel(self.key(kind), *names)
        pipe.incr(self.version_key)
        removed = sum(int(n) for n in pipe.execute()[:-1])
        return removed

    def clear(self) -> None:
        """Delete every list of this namespace (tests and ``--all`` of every list)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(*(self.key(kind) for kind in HashKind))
        pipe.incr(self.version_key)
        pipe.execute()
