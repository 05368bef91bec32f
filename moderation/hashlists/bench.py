"""How PDQ lookup cost grows with list size: the multi-index against brute force (``moderation hashes bench``).

Each size gets n random 256-bit hashes; for every query hash a near-duplicate (the query with ``planted``
random bits flipped, within the match distance) is planted at a random position, so every query has at least
one true match. Reported per size: index build time, median per-query latency of the index and of brute force
(numpy XOR + popcount over all n), the mean number of candidates the index verified, and whether both found the
same matches for every query.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt

from moderation.hashlists.index import PdqIndex, brute_force
from moderation.hashlists.pdq import Words


@dataclass(frozen=True)
class BenchRow:
    size: int
    build_s: float
    index_median_us: float
    brute_median_us: float
    candidates_mean: float
    agreed: bool

    @property
    def speedup(self) -> float:
        return self.brute_median_us / self.index_median_us if self.index_median_us else float("inf")


def random_hashes(n: int, rng: np.random.Generator) -> Words:
    return rng.integers(0, np.iinfo(np.uint64).max, size=(n, 4), dtype=np.uint64, endpoint=True)


def flip_bits(hashes: Words, bits: int, rng: np.random.Generator) -> Words:
    """Each row with ``bits`` distinct random bits flipped."""
    flipped = hashes.copy()
    as_bytes = flipped.view(np.uint8).reshape(len(hashes), 32)
    for row in range(len(hashes)):
        for bit in rng.choice(256, size=bits, replace=False):
            as_bytes[row, bit // 8] ^= np.uint8(1 << (bit % 8))
    return flipped


Found = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]


def _median_us(run: Callable[[], Found], repeats: int) -> tuple[float, Found]:
    """Median wall time of ``repeats`` calls, in microseconds, and the last result."""
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        timings.append((time.perf_counter() - started) * 1e6)
    return statistics.median(timings), result


def bench_size(
    size: int, *, queries: int = 50, repeats: int = 5, max_distance: int = 31, planted: int = 20, seed: int = 0
) -> BenchRow:
    """One row of the benchmark (see the module docstring)."""
    rng = np.random.default_rng(seed + size)
    words = random_hashes(size, rng)
    probes = random_hashes(queries, rng)
    positions = rng.choice(size, size=min(queries, size), replace=False)
    words[positions] = flip_bits(probes[: len(positions)], min(planted, max_distance), rng)
    started = time.perf_counter()
    index = PdqIndex(words, brute_force_below=0)
    build_s = time.perf_counter() - started
    index_times, brute_times, candidates = [], [], []
    agreed = True
    for query in probes:
        index_us, found = _median_us(partial(index.query, query, max_distance), repeats)
        brute_us, expected = _median_us(partial(brute_force, words, query, max_distance), repeats)
        index_times.append(index_us)
        brute_times.append(brute_us)
        agreed &= _same(found, expected)
        candidates.append(index.candidate_count(query, max_distance))
    return BenchRow(
        size,
        build_s,
        statistics.median(index_times),
        statistics.median(brute_times),
        float(np.mean(candidates)),
        agreed,
    )


def _same(a: Found, b: Found) -> bool:
    (ids_a, dist_a), (ids_b, dist_b) = a, b
    order = np.argsort(ids_b)
    return bool(np.array_equal(ids_a, ids_b[order]) and np.array_equal(dist_a, dist_b[order]))


def run_bench(
    sizes: Sequence[int], *, queries: int = 50, repeats: int = 5, max_distance: int = 31, seed: int = 0
) -> list[BenchRow]:
    return [bench_size(n, queries=queries, repeats=repeats, max_distance=max_distance, seed=seed) for n in sizes]


def format_rows(rows: Sequence[BenchRow], max_distance: int) -> str:
    lines = [
        f"PDQ lookup, distance <= {max_distance}: multi-index (16 x 16-bit chunks) vs brute force (numpy XOR+popcount)",
        "| entries | build | index query (median) | brute force (median) | speed-up | candidates/query | same |",
        "|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.size:,} | {row.build_s * 1000:,.1f} ms | {row.index_median_us:,.0f} µs | "
            f"{row.brute_median_us:,.0f} µs | {row.speedup:,.1f}x | {row.candidates_mean:,.0f} | "
            f"{'yes' if row.agreed else 'NO'} |"
        )
    return "\n".join(lines)
