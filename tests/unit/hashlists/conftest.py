"""Real photos that install offline, and the perturbations a re-posted copy goes through."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import pytest
from PIL import Image

from moderation.decode.images import ImageLimits
from moderation.hashlists.pdq import centred_crop

LIMITS = ImageLimits(max_bytes=8_000_000, max_pixels=40_000_000, max_frames=100)
# Natural photos among scikit-image's bundled data (the rest are microscopy, synthetic or tiny).
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "rocket.jpg",
)


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def reposted(data: bytes) -> bytes:
    """The acceptance perturbation: resized to 50%, 5% of each dimension cropped away (centred), JPEG quality 30."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image = image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR)
    return jpeg(centred_crop(image, 0.05), 30)


def sklearn_photos() -> list[bytes]:
    from sklearn.datasets import load_sample_images

    return [png(Image.fromarray(array)) for array in load_sample_images().images]


def skimage_photos() -> list[bytes]:
    """scikit-image's bundled natural photos, when scikit-image is installed (it is not a dependency)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return [(folder / name).read_bytes() for name in SKIMAGE_PHOTOS if (folder / name).exists()]


@pytest.fixture(scope="session")
def textile_bytes() -> list[bytes]:
    from moderation.fuse.datasets import textile_photos, textile_root

    root = textile_root()
    return [(root / photo.key).read_bytes() for photo in textile_photos()]
