"""Encodings cached in the real Redis: each distinct item of a batch is encoded once, repeats and later batches get
exactly its row, and an image that cannot be decoded is neither cached nor hidden in its repeats."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

import pytest
import torch

from moderation.decode.images import ImageLimits
from moderation.encode.base import PreparedTexts
from moderation.encode.cached import CachedEncoders
from moderation.errors import DecodeError
from moderation.observability.metrics import Metrics
from moderation.state.cache import Cache
from moderation.types import ImageInput, Modality, ReasonCode
from tests.conftest import Stack

pytestmark = pytest.mark.integration

LIMITS = ImageLimits(max_bytes=1_000_000, max_pixels=1_000_000, max_frames=1)


def _vector(data: bytes, dim: int) -> torch.Tensor:
    """A row that depends only on the item: fractional float32 values, so a lossy round trip would show."""
    digest = hashlib.sha256(data).digest() * (dim // 32 + 1)
    return torch.tensor([byte / 7.0 for byte in digest[:dim]], dtype=torch.float32)


class CountingText:
    name, version, modality, dim, device = "count-text", f"count-text@{uuid.uuid4().hex}", Modality.TEXT, 8, "cpu"

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def prepare(self, texts: Sequence[str]) -> PreparedTexts:
        return PreparedTexts(len(texts), [(list(range(len(texts))), list(texts))])

    def encode_prepared(self, prepared: PreparedTexts) -> torch.Tensor:
        texts: list[str] = [text for _, chunk in prepared.passes for text in chunk]
        self.encoded += texts
        return torch.stack([_vector(text.encode(), self.dim) for text in texts])


class CountingImage:
    name, version, modality, dim, device = "count-image", f"count-image@{uuid.uuid4().hex}", Modality.IMAGE, 40, "cpu"

    def __init__(self) -> None:
        self.encoded = 0

    def preprocess_many(
        self, images: Sequence[tuple[bytes, str | None]], limits: ImageLimits
    ) -> list[torch.Tensor | DecodeError]:
        return [
            DecodeError(ReasonCode.IMAGE_CORRUPT, "broken") if data == b"broken" else _vector(data, self.dim)
            for data, _ in images
        ]

    def encode(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        self.encoded += len(images)
        return torch.stack(list(images))


def _image(data: bytes) -> ImageInput:
    return ImageInput(data=data, declared_type="image/jpeg", sha256=hashlib.sha256(data).hexdigest())


def _encode(
    encoders: CachedEncoders, texts: list[str], images: list[ImageInput]
) -> tuple[torch.Tensor, torch.Tensor, dict[int, DecodeError]]:
    return encoders.encode(encoders.prepare(texts, images, LIMITS))


def test_repeats_in_a_batch_and_later_batches_get_the_first_encodings_row(stack: Stack) -> None:
    text, image = CountingText(), CountingImage()
    encoders = CachedEncoders(text, image, Cache(stack.redis_url, 60, Metrics()), Metrics())  # type: ignore[arg-type]
    texts = ["spam", "ham", "spam", "eggs", "ham"]
    images = [_image(b"cat"), _image(b"dog"), _image(b"cat"), _image(b"broken"), _image(b"broken")]

    text_rows, image_rows, failed = _encode(encoders, texts, images)

    assert text.encoded == ["spam", "ham", "eggs"] and image.encoded == 2  # each distinct item once
    for row, item in enumerate(texts):
        assert torch.equal(text_rows[row], _vector(item.encode(), text.dim))
    assert torch.equal(image_rows[0], image_rows[2]) and torch.equal(image_rows[0], _vector(b"cat", image.dim))
    assert set(failed) == {3, 4} and all(error.reason is ReasonCode.IMAGE_CORRUPT for error in failed.values())
    assert torch.isnan(image_rows[3]).all() and torch.isnan(image_rows[4]).all()

    again_text, again_image, again_failed = _encode(encoders, texts[::-1], images[:3])

    assert text.encoded == ["spam", "ham", "eggs"] and image.encoded == 2  # all from the cache, bit for bit
    assert torch.equal(again_text, text_rows.flip(0))
    assert torch.equal(again_image, image_rows[:3]) and not again_failed
    _, _, failed_again = _encode(encoders, [], [_image(b"broken")])
    assert 0 in failed_again, "a failed image was cached as if it had an encoding"
