"""Image decoding that checks every limit before it spends memory, and decodes JPEGs at reduced size.

Posts carry untrusted bytes. The order of work is what keeps a hostile image cheap:

1. the byte count is checked (:attr:`ImageLimits.max_bytes`);
2. the content type is sniffed from the magic bytes, never trusted from the post; a declared type that disagrees
   is an error of its own (``IMAGE_CONTENT_TYPE_MISMATCH``);
3. the header alone is parsed (``Image.open`` reads no pixels) and width x height and frame count are checked, so
   a decompression bomb (a tiny PNG that inflates to gigabytes) is refused before any pixel buffer exists;
4. only then the first frame is decoded; a JPEG at the smallest DCT scale that still covers the model's input
   size (``Image.draft``: 1/2, 1/4 or 1/8 of the work and memory for a photo much larger than the model needs).

Every refusal is a :class:`~moderation.errors.DecodeError` carrying a :class:`~moderation.types.ReasonCode`.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from moderation.errors import DecodeError
from moderation.types import ReasonCode

if TYPE_CHECKING:
    from moderation.settings import Settings

JPEG = "image/jpeg"
PNG = "image/png"
GIF = "image/gif"
WEBP = "image/webp"

#: Supported content types and the one Pillow plugin allowed to parse each (no other plugin sees the bytes).
PIL_FORMATS: dict[str, str] = {JPEG: "JPEG", PNG: "PNG", GIF: "GIF", WEBP: "WEBP"}

_ALIASES = {"image/jpg": JPEG, "image/pjpeg": JPEG, "image/x-png": PNG}
_BACKGROUND = (255, 255, 255)  # transparent pixels are shown over white, as most viewers do


@dataclass(frozen=True)
class ImageLimits:
    """The most an image may cost; each is checked before the pixels are decoded.

    Pillow keeps its own bomb guard (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 M pixels; twice that raises): an
    image past it is refused as ``IMAGE_TOO_MANY_PIXELS`` too, so a ``max_pixels`` above Pillow's bound needs
    that bound raised as well.
    """

    max_bytes: int
    max_pixels: int
    max_frames: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        """The limits configured by ``MODERATION_MAX_IMAGE_BYTES``, ``..._PIXELS`` and ``..._FRAMES``."""
        return cls(
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            max_frames=settings.max_image_frames,
        )


def sniff_content_type(data: bytes) -> str | None:
    """The content type the magic bytes say (JPEG, PNG, GIF, WebP), or ``None`` for anything else."""
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if data.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return WEBP
    return None


def normalise_content_type(declared: str) -> str:
    """``"Image/JPG; q=1"`` -> ``"image/jpeg"``: lower case, parameters dropped, common aliases mapped."""
    base = declared.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


def open_image(data: bytes, limits: ImageLimits, declared_type: str | None = None) -> tuple[Image.Image, str]:
    """Check bytes, type, pixels and frames from the header alone; return the lazy image and its content type.

    No pixel is decoded: the image is what ``Image.open`` returns. GPU decoding uses this to validate before it
    hands the bytes to nvjpeg; :func:`decode_image` uses it before it decodes on the CPU.
    """
    if len(data) > limits.max_bytes:
        raise DecodeError(
            ReasonCode.IMAGE_TOO_LARGE,
            f"image is {len(data)} bytes, over the limit of {limits.max_bytes}; "
            "send a smaller image or raise MODERATION_MAX_IMAGE_BYTES",
        )
    content_type = sniff_content_type(data)
    if content_type is None:
        raise DecodeError(
            ReasonCode.IMAGE_UNSUPPORTED_TYPE,
            f"image bytes start with {data[:12]!r}, which is none of {', '.join(PIL_FORMATS)}; "
            "convert the image to one of these",
        )
    if declared_type is not None and normalise_content_type(declared_type) != content_type:
        raise DecodeError(
            ReasonCode.IMAGE_CONTENT_TYPE_MISMATCH,
            f"declared content type {declared_type!r} but the bytes are {content_type}; "
            "declare the type the bytes really have",
        )
    if content_type == WEBP:
        # Pillow's WebP plugin sets up libwebp's decoder, canvas included, while it opens: check first.
        _check_pixels(_webp_size(data), limits)
    image = _open_header(data, content_type)
    _check_pixels(image.size, limits)
    frames = int(getattr(image, "n_frames", 1))
    if frames > limits.max_frames:
        raise DecodeError(
            ReasonCode.IMAGE_TOO_MANY_FRAMES,
            f"image has {frames} frames, over the limit of {limits.max_frames}; "
            "send a shorter animation or raise MODERATION_MAX_IMAGE_FRAMES",
        )
    return image, content_type


def decode_image(
    data: bytes, size: tuple[int, int], limits: ImageLimits, declared_type: str | None = None
) -> Image.Image:
    """Decode the first frame of ``data`` to RGB, all limits checked first (see the module docstring).

    ``size`` (width, height) is the smallest the caller needs: a JPEG is decoded at the smallest reduced scale
    that keeps both sides at least that large, so the caller's exact resize and crop still see enough pixels;
    other formats are decoded at full size. EXIF orientation is applied and transparency is flattened onto
    white, so the model sees what a viewer shows.
    """
    image, content_type = open_image(data, limits, declared_type)
    try:
        if content_type == JPEG:
            image.draft("RGB", size)
        image.seek(0)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return _to_rgb(image)
    except Image.DecompressionBombError as exc:
        raise _too_many_pixels(str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError) as exc:
        raise DecodeError(
            ReasonCode.IMAGE_CORRUPT, f"{content_type} data cannot be decoded ({exc}); the file is damaged"
        ) from exc


def _open_header(data: bytes, content_type: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=[PIL_FORMATS[content_type]])
    except Image.DecompressionBombError as exc:
        raise _too_many_pixels(str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError) as exc:
        raise DecodeError(
            ReasonCode.IMAGE_CORRUPT, f"{content_type} header cannot be read ({exc}); the file is damaged"
        ) from exc


def _check_pixels(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if width * height > limits.max_pixels:
        raise _too_many_pixels(f"image is {width}x{height} = {width * height} pixels, over {limits.max_pixels}")


def _too_many_pixels(detail: str) -> DecodeError:
    return DecodeError(
        ReasonCode.IMAGE_TOO_MANY_PIXELS,
        f"{detail}; refused before decoding (decompression-bomb guard): send a smaller image or raise "
        "MODERATION_MAX_IMAGE_PIXELS",
    )


def _webp_size(data: bytes) -> tuple[int, int]:
    """Canvas (width, height) from a WebP header: the VP8X, VP8L or VP8 chunk; (0, 0) when unreadable."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return 0, 0  # let Pillow report the damage


def _to_rgb(image: Image.Image) -> Image.Image:
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if not has_alpha:
        return image if image.mode == "RGB" else image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
