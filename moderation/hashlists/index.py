"""Near-neighbour search of PDQ hashes by Hamming distance: multi-index hashing, with brute force to check it.

The 256 bits are cut into :data:`CHUNKS` = 16 chunks of 16 bits. If two hashes are within distance ``d``, at
least one of their 16 chunks differs in at most ``r = d // 16`` bits (pigeonhole: were every chunk ``r + 1``
bits apart, the distance would be at least ``16 (r + 1) > d``). For each chunk the index keeps the entries
sorted by that chunk's value, with a 65,537-slot offset table (a counting sort), so the entries whose chunk has
a given value are one slice. A query reads, in each chunk, the slices of every value within ``r`` bits of its own
chunk (``sum(C(16, k) for k <= r)`` values: 17 for the default distance 31), gathers those candidates, and
verifies each with XOR and popcount on four 64-bit words.

Cost of one query, n entries: ``16 * P`` slice reads (P = 17 at d <= 31, 137 at d <= 47) and, for hashes spread
like random bits, about ``n * 16 * P / 65536`` candidates to verify (n / 241 at d <= 31), against n for brute
force. Memory: 32 bytes per hash plus 16 x 4 bytes of sorted ids per hash, and 16 offset tables of 0.5 MB.
Real PDQ hashes are not uniform, so some slices are fuller than others; ``moderation hashes bench`` measures
it. Below :data:`BRUTE_FORCE_BELOW` entries brute force is faster and is used.
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import numpy.typing as npt

from moderation.hashlists.pdq import Words, popcount_rows

CHUNKS = 16
CHUNK_BITS = 16
SLOTS = 1 << CHUNK_BITS
BRUTE_FORCE_BELOW = 2048
#: Widest per-chunk radius probed; beyond it (distance >= 64) the probe count outgrows brute force.
MAX_RADIUS = 3

Ids = npt.NDArray[np.int64]
Distances = npt.NDArray[np.int64]


@cache
def probe_masks(radius: int) -> npt.NDArray[np.int64]:
    """Every 16-bit XOR mask with at most ``radius`` bits set, smallest first."""
    masks = [0]
    for bits in range(1, radius + 1):
        for combo in itertools.combinations(range(CHUNK_BITS), bits):
            masks.append(sum(1 << b for b in combo))
    return np.array(masks, dtype=np.int64)


def brute_force(words: Words, query: Words, max_distance: int) -> tuple[Ids, Distances]:
    """Ids and distances of every row of ``words`` within ``max_distance`` of ``query`` (shape (4,))."""
    distances = popcount_rows(words ^ query)
    ids = np.flatnonzero(distances <= max_distance)
    return ids.astype(np.int64), distances[ids]


class PdqIndex:
    """An immutable index over an (n, 4) uint64 array of hashes; row ``i`` is entry id ``i``."""

    def __init__(self, words: Words, *, brute_force_below: int = BRUTE_FORCE_BELOW) -> None:
        self.words = np.ascontiguousarray(words, dtype=np.uint64)
        if self.words.ndim != 2 or self.words.shape[1] != 4:
            raise ValueError(f"expected an (n, 4) uint64 array of hashes, got shape {self.words.shape}")
        self.size = len(self.words)
        self.brute_force_below = brute_force_below
        self._ids: npt.NDArray[np.int32] | None = None
        self._starts: npt.NDArray[np.int64] | None = None
        if self.size >= brute_force_below:
            self._build()

    @property
    def indexed(self) -> bool:
        """Whether queries use the chunk tables (else brute force)."""
        return self._ids is not None

    def _build(self) -> None:
        n = self.size
        chunks = self.words.view(np.uint16).reshape(n, CHUNKS)
        ids = np.empty((CHUNKS, n), dtype=np.int32)
        starts = np.zeros((CHUNKS, SLOTS + 1), dtype=np.int64)
        for c in range(CHUNKS):
            column = chunks[:, c]
            ids[c] = np.argsort(column, kind="stable")
            np.cumsum(np.bincount(column, minlength=SLOTS), out=starts[c, 1:])
        self._ids = ids
        self._starts = starts

    def query(self, query: Words, max_distance: int) -> tuple[Ids, Distances]:
        """Ids (ascending) and distances of every hash within ``max_distance`` of ``query`` (shape (4,))."""
        query = np.ascontiguousarray(query, dtype=np.uint64).reshape(4)
        radius = max_distance // CHUNKS
        if self._ids is None or self._starts is None or radius > MAX_RADIUS or max_distance < 0:
            return brute_force(self.words, query, max_distance)
        masks = probe_masks(radius)
        own = query.view(np.uint16).astype(np.int64)  # (16,)
        probes = own[:, None] ^ masks[None, :]  # (16, P) chunk values to read
        rows = np.arange(CHUNKS, dtype=np.int64)[:, None]
        lo = self._starts[rows, probes].ravel()
        hi = self._starts[rows, probes + 1].ravel()
        counts = hi - lo
        total = int(counts.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        offsets = np.repeat((rows * self.size).ravel(), len(masks))
        keep = counts > 0
        lo, counts, offsets = lo[keep], counts[keep], offsets[keep]
        starts = lo + offsets
        # positions lo..hi-1 of every non-empty slice, concatenated, in the flattened (16 * n) id table
        positions = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(total)
        candidates = self._ids.ravel()[positions]  # an id may appear once per chunk it shares: verify, then dedupe
        distances = popcount_rows(self.words[candidates] ^ query)
        within = distances <= max_distance
        ids, first = np.unique(candidates[within], return_index=True)
        return ids.astype(np.int64), distances[within][first]

    def candidate_count(self, query: Words, max_distance: int) -> int:
        """How many ids a query reads before verification (an id found in several chunks counts each time)."""
        radius = max_distance // CHUNKS
        if self._starts is None or radius > MAX_RADIUS:
            return self.size
        own = np.ascontiguousarray(query, dtype=np.uint64).reshape(4).view(np.uint16).astype(np.int64)
        probes = own[:, None] ^ probe_masks(radius)[None, :]
        rows = np.arange(CHUNKS, dtype=np.int64)[:, None]
        return int((self._starts[rows, probes + 1] - self._starts[rows, probes]).sum())

    def candidates_per_query(self, max_distance: int) -> float:
        """Expected candidates per query for hashes spread like random bits (the cost model above)."""
        radius = max_distance // CHUNKS
        if not self.indexed or radius > MAX_RADIUS:
            return float(self.size)
        return self.size * CHUNKS * len(probe_masks(radius)) / SLOTS
