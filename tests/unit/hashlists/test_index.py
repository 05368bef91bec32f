"""The multi-index finds exactly what brute force finds, at every distance up to the widest allowed."""

from __future__ import annotations

import numpy as np
import pytest

from moderation.hashlists.bench import bench_size, flip_bits, random_hashes
from moderation.hashlists.index import CHUNKS, PdqIndex, brute_force, probe_masks
from moderation.hashlists.pdq import hamming, hex_to_words, popcount_rows, words_to_hex


def test_probe_masks_are_every_16_bit_mask_within_the_radius() -> None:
    assert [len(probe_masks(r)) for r in range(4)] == [1, 17, 137, 697]
    assert all(bin(int(m)).count("1") <= 2 for m in probe_masks(2))
    assert len(set(probe_masks(3).tolist())) == 697


def test_hex_words_round_trip_and_hamming() -> None:
    rng = np.random.default_rng(1)
    words = random_hashes(5, rng)
    assert np.array_equal(hex_to_words(words_to_hex(words)), words)
    a, b = words_to_hex(words[:2])

    def bits(h: str) -> str:
        return bin(int(h, 16))[2:].zfill(256)

    assert hamming(a, b) == sum(x != y for x, y in zip(bits(a), bits(b), strict=True))
    assert popcount_rows(words ^ words).tolist() == [0] * 5


@pytest.mark.parametrize("max_distance", [0, 15, 16, 31, 32, 47, 63])
def test_index_agrees_with_brute_force_including_the_boundary(max_distance: int) -> None:
    rng = np.random.default_rng(max_distance)
    words = random_hashes(20_000, rng)
    queries = random_hashes(40, rng)
    # plant neighbours at the boundary, just inside and just outside it
    for k, bits in enumerate((max_distance, max(0, max_distance - 1), max_distance + 1)):
        words[k * 40 : (k + 1) * 40] = flip_bits(queries, bits, rng)
    index = PdqIndex(words)
    assert index.indexed
    for query in queries:
        ids, distances = index.query(query, max_distance)
        expected_ids, expected_distances = brute_force(words, query, max_distance)
        assert ids.tolist() == sorted(expected_ids.tolist())
        assert dict(zip(ids.tolist(), distances.tolist(), strict=True)) == dict(
            zip(expected_ids.tolist(), expected_distances.tolist(), strict=True)
        )
        assert all(d <= max_distance for d in distances.tolist())
    # every planted neighbour within the distance is found
    found = {i for q in queries for i in index.query(q, max_distance)[0].tolist()}
    assert set(range(40)) <= found


def test_small_lists_use_brute_force_and_duplicates_are_all_returned() -> None:
    rng = np.random.default_rng(3)
    words = random_hashes(10, rng)
    words[7] = words[2]
    index = PdqIndex(words)
    assert not index.indexed
    ids, distances = index.query(words[2], 0)
    assert ids.tolist() == [2, 7] and distances.tolist() == [0, 0]
    empty = PdqIndex(np.zeros((0, 4), dtype=np.uint64))
    assert empty.query(words[0], 31)[0].size == 0


def test_candidates_follow_the_cost_model() -> None:
    rng = np.random.default_rng(4)
    index = PdqIndex(random_hashes(200_000, rng))
    expected = index.candidates_per_query(31)
    assert expected == pytest.approx(200_000 * CHUNKS * 17 / 65536)
    seen = np.mean([index.candidate_count(q, 31) for q in random_hashes(50, rng)])
    assert 0.8 * expected < seen < 1.2 * expected


def test_bench_row_at_100k_is_correct_and_faster_than_brute_force() -> None:
    row = bench_size(100_000, queries=10, repeats=3)
    assert row.agreed
    assert row.index_median_us < row.brute_median_us


@pytest.mark.slow
def test_bench_at_one_million_entries() -> None:
    row = bench_size(1_000_000, queries=30, repeats=5)
    assert row.agreed
    assert row.speedup > 10, row
