"""Encoders loaded once per test session (loading is the slow part), and real photos."""

from __future__ import annotations

from pathlib import Path

import pytest

from moderation.decode.images import ImageLimits
from moderation.encode import ImageEncoder, TextEncoder, create_image_encoder, create_text_encoder

#: Batch of 64 in one forward pass, so batch-invariance tests compare one pass against single items.
BATCH = 64


@pytest.fixture(scope="session")
def text_encoder() -> TextEncoder:
    return create_text_encoder("minilm-l6", device="cpu", batch_size=BATCH)


@pytest.fixture(scope="session")
def image_encoder() -> ImageEncoder:
    return create_image_encoder("efficientnet-lite0", device="cpu", batch_size=BATCH)


@pytest.fixture(scope="session")
def photos() -> list[bytes]:
    """The two real JPEG photos that scikit-learn ships (china.jpg, flower.jpg; 640x427)."""
    datasets = pytest.importorskip("sklearn.datasets")
    folder = Path(datasets.__file__).parent / "images"
    return [(folder / name).read_bytes() for name in ("china.jpg", "flower.jpg")]


@pytest.fixture(scope="session")
def limits() -> ImageLimits:
    return ImageLimits(max_bytes=8_000_000, max_pixels=40_000_000, max_frames=100)
