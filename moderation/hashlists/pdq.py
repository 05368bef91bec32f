"""PDQ, Meta's perceptual hash, as this project computes it: the same function for list entries and for posts.

An image is decoded with the worker's limits (``moderation.decode.images``: type sniffed, pixels and frames
checked before any pixel is decoded, EXIF orientation applied, transparency flattened), reduced so its longer
side is at most :data:`HASH_SIDE` pixels (PDQ's cost grows faster than the pixel count: about 5 ms at 512 px,
30 ms at 1024 px, 440 ms at 2560 px on one CPU core here; its 64x64 downsampling makes the reduction nearly
invisible in the hash), and hashed by the ``pdqhash`` bindings of Meta's reference C++ code.

The hex form is ThreatExchange's (bit 0 of the hash vector is the most significant bit of the first hex digit).
Matching works on four 64-bit words per hash; the order of bits inside the words does not matter for XOR and
popcount, as long as lists and queries use the same conversion, :func:`hex_to_words`.

PDQ is robust to re-encoding and resizing but not to cropping (a centred crop of 5% of each side moves the hash
by 36-72 bits on natural photos, past the match distance). :func:`image_variants` therefore gives, besides the
image itself, centred crops of it; ``moderation hashes add`` stores a PDQ entry for each (``variant``), so a
slightly cropped copy lands near one of them. See ``docs/HASHES.md`` for the measurements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from moderation.decode.images import ImageLimits, decode_image
from moderation.errors import ConfigError

HASH_SIDE = 512  # longest side an image is reduced to before hashing
PDQ_BITS = 256
#: Centred crops hashed for each listed image, as the share of each dimension cut away (half on each side).
CROP_VARIANTS: tuple[float, ...] = (0.05, 0.10)

Words = npt.NDArray[np.uint64]


@dataclass(frozen=True)
class PdqHash:
    """A PDQ hash (64 hex digits) and PDQ's own quality score, 0..100 (below ~50: a flat image, unreliable)."""

    hex: str
    quality: int


def _pdqhash() -> Any:
    try:
        import pdqhash
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise ConfigError("perceptual hashing needs the pdqhash package: pip install pdqhash") from exc
    return pdqhash


def pdq_of_image(image: Image.Image) -> PdqHash:
    """PDQ of an RGB image, reduced first to at most :data:`HASH_SIDE` pixels on its longer side."""
    pdqhash = _pdqhash()
    if max(image.size) > HASH_SIDE:
        image = image.copy()
        image.thumbnail((HASH_SIDE, HASH_SIDE), Image.Resampling.BILINEAR)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    bits, quality = pdqhash.compute(np.asarray(rgb))
    packed = np.packbits(np.asarray(bits, dtype=np.uint8))
    return PdqHash(packed.tobytes().hex(), int(quality))


def decode_for_hash(data: bytes, limits: ImageLimits, declared_type: str | None = None) -> Image.Image:
    """The image as PDQ sees it: decoded within ``limits`` (a JPEG at reduced DCT scale), first frame, RGB.

    Raises :class:`~moderation.errors.DecodeError` exactly as the encoders' decoding would.
    """
    return decode_image(data, (HASH_SIDE, HASH_SIDE), limits, declared_type)


def pdq_of_bytes(data: bytes, limits: ImageLimits, declared_type: str | None = None) -> PdqHash:
    """PDQ of encoded image bytes (JPEG, PNG, GIF, WebP), decoded within ``limits``."""
    return pdq_of_image(decode_for_hash(data, limits, declared_type))


def centred_crop(image: Image.Image, fraction: float) -> Image.Image:
    """``image`` with ``fraction`` of its width and of its height cut away, half on each side."""
    width, height = image.size
    dx, dy = round(width * fraction / 2), round(height * fraction / 2)
    return image.crop((dx, dy, width - dx, height - dy))


def image_variants(image: Image.Image, crops: Sequence[float] = CROP_VARIANTS) -> list[tuple[str, Image.Image]]:
    """The image and its centred crops, named ``original`` and ``crop-<p>%``: what a listed image enrols."""
    variants = [("original", image)]
    for fraction in crops:
        if not 0 < fraction < 0.5:
            raise ConfigError(f"crop fraction {fraction} must be between 0 and 0.5")
        variants.append((f"crop-{fraction * 100:g}%", centred_crop(image, fraction)))
    return variants


def hex_to_words(values: Sequence[str]) -> Words:
    """Hashes as an (n, 4) array of uint64 words, for XOR and popcount."""
    if not values:
        return np.zeros((0, 4), dtype=np.uint64)
    raw = bytes.fromhex("".join(values))
    return np.frombuffer(raw, dtype=np.uint64).reshape(len(values), 4).copy()


def words_to_hex(words: Words) -> list[str]:
    """Inverse of :func:`hex_to_words`."""
    return [row.tobytes().hex() for row in np.ascontiguousarray(words, dtype=np.uint64)]


if hasattr(np, "bitwise_count"):

    def popcount_rows(words: Words) -> npt.NDArray[np.int64]:
        """Set bits per row of an (n, 4) uint64 array: the Hamming distance when the rows are XORs."""
        return np.asarray(np.bitwise_count(words).sum(axis=1, dtype=np.int64), dtype=np.int64)

else:  # pragma: no cover - numpy < 2.0
    _POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)

    def popcount_rows(words: Words) -> npt.NDArray[np.int64]:
        """Set bits per row of an (n, 4) uint64 array: the Hamming distance when the rows are XORs."""
        as_bytes = np.ascontiguousarray(words).view(np.uint8).reshape(len(words), -1)
        return np.asarray(_POP8[as_bytes].sum(axis=1), dtype=np.int64)


def hamming(a: str, b: str) -> int:
    """Hamming distance of two PDQ hashes in hex."""
    words = hex_to_words([a, b])
    return int(popcount_rows(words[:1] ^ words[1:])[0])
