"""Shared pieces: the image-to-post mapping, devices and threads."""

from __future__ import annotations

import pytest
import torch

from moderation.encode import flatten_images
from moderation.encode.base import bucket_size, bucket_sizes, resolve_device, weights_digest
from moderation.errors import ConfigError, ModelError


def test_flatten_images_keeps_the_post_of_each_image() -> None:
    items, owners = flatten_images([["a", "b"], [], ["c"], ["d", "e", "f"]])
    assert items == ["a", "b", "c", "d", "e", "f"]
    assert owners == [0, 0, 2, 3, 3, 3]
    assert flatten_images([]) == ([], [])


def test_per_image_rows_let_one_bad_image_stand_out() -> None:
    """Scores stay per image; the post's worst image is found through the mapping, not averaged away."""
    items, owners = flatten_images([["ok", "ok", "ok", "bad"], ["ok"]])
    scores = torch.tensor([0.9 if item == "bad" else 0.1 for item in items])
    worst = torch.zeros(2).scatter_reduce(0, torch.tensor(owners), scores, reduce="amax", include_self=False)
    assert worst.tolist() == pytest.approx([0.9, 0.1])


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="not a torch device"):
        resolve_device("tpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")


def test_bucket_size() -> None:
    assert [bucket_size(n) for n in (1, 2, 3, 5, 8, 9, 64)] == [1, 2, 4, 8, 8, 16, 64]
    assert bucket_sizes(1) == [1]
    assert bucket_sizes(100) == [1, 2, 4, 8, 16, 32, 64, 128]
    assert bucket_sizes(256)[-1] == 256 and len(bucket_sizes(256)) == 9


def test_bucket_size_with_a_step_pads_large_batches_to_its_multiples() -> None:
    assert [bucket_size(n, 32) for n in (1, 3, 32, 33, 64, 65, 154, 200, 256)] == [1, 4, 32, 64, 64, 96, 160, 224, 256]
    assert bucket_sizes(256, 32) == [1, 2, 4, 8, 16, 32, 64, 96, 128, 160, 192, 224, 256]
    assert bucket_sizes(100, 32) == [1, 2, 4, 8, 16, 32, 64, 96, 128]
    for n in range(1, 300):
        assert n <= bucket_size(n, 32) <= bucket_size(n)


def test_weights_digest_needs_files() -> None:
    with pytest.raises(ModelError):
        weights_digest([])
