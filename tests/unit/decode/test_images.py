"""Image decoding: content sniffing, every limit and its reason code, bombs refused from the header alone."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import pytest
from PIL import Image, ImageFile

from moderation.decode.images import (
    ImageLimits,
    _webp_size,
    decode_image,
    normalise_content_type,
    open_image,
    sniff_content_type,
)
from moderation.errors import DecodeError
from moderation.settings import load_settings
from moderation.types import ReasonCode

LIMITS = ImageLimits(max_bytes=8_000_000, max_pixels=40_000_000, max_frames=100)
SIZE = (256, 256)


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def photo(width: int = 320, height: int = 240) -> Image.Image:
    return Image.linear_gradient("L").resize((width, height)).convert("RGB")


def animation(frames: int) -> list[Image.Image]:
    return [Image.new("RGB", (16, 16), (10 * i % 256, 0, 0)) for i in range(frames)]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int, idat: bytes) -> bytes:
    """A grayscale PNG whose header claims ``width`` x ``height``; ``idat`` is its compressed pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def reason_of(call: Callable[[], object]) -> ReasonCode:
    with pytest.raises(DecodeError) as caught:
        call()
    return caught.value.reason


@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any image decoder runs (a pixel buffer would be allocated)."""

    def refuse(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("GIF", "image/gif"), ("WEBP", "image/webp")],
)
def test_supported_types_are_sniffed_and_decoded_to_rgb(fmt: str, content_type: str) -> None:
    data = encoded(photo(), fmt)
    assert sniff_content_type(data) == content_type
    image = decode_image(data, SIZE, LIMITS, declared_type=content_type)
    assert image.mode == "RGB" and image.size == (320, 240)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello", encoded(photo(), "BMP"), encoded(photo(), "TIFF"), b"RIFF\x00\x00\x00\x00WAVEfmt ", b"<svg/>"],
)
def test_anything_else_is_unsupported(data: bytes) -> None:
    assert sniff_content_type(data) is None
    assert reason_of(lambda: decode_image(data, SIZE, LIMITS)) is ReasonCode.IMAGE_UNSUPPORTED_TYPE


def test_declared_type_must_match_the_bytes() -> None:
    data = encoded(photo(), "PNG")
    assert reason_of(lambda: decode_image(data, SIZE, LIMITS, "image/jpeg")) is ReasonCode.IMAGE_CONTENT_TYPE_MISMATCH
    assert reason_of(lambda: decode_image(data, SIZE, LIMITS, "image/bmp")) is ReasonCode.IMAGE_CONTENT_TYPE_MISMATCH
    decode_image(data, SIZE, LIMITS, "Image/PNG; charset=binary")
    assert normalise_content_type("image/JPG") == "image/jpeg"


def test_too_many_bytes() -> None:
    data = encoded(photo(), "PNG")
    limits = ImageLimits(max_bytes=len(data) - 1, max_pixels=LIMITS.max_pixels, max_frames=LIMITS.max_frames)
    assert reason_of(lambda: decode_image(data, SIZE, limits)) is ReasonCode.IMAGE_TOO_LARGE
    assert decode_image(data, SIZE, ImageLimits(len(data), LIMITS.max_pixels, 1)).size == (320, 240)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
def test_too_many_pixels(fmt: str, no_pixel_decoding: None) -> None:
    data = encoded(photo(320, 240), fmt)
    limits = ImageLimits(max_bytes=LIMITS.max_bytes, max_pixels=320 * 240 - 1, max_frames=LIMITS.max_frames)
    assert reason_of(lambda: decode_image(data, SIZE, limits)) is ReasonCode.IMAGE_TOO_MANY_PIXELS
    open_image(data, ImageLimits(LIMITS.max_bytes, 320 * 240, 1))  # exactly at the limit passes


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("GIF", {}), ("PNG", {}), ("WEBP", {"lossless": True})],
)
def test_too_many_frames(fmt: str, options: dict[str, object]) -> None:
    frames = animation(5)
    data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, **options)
    limits = ImageLimits(max_bytes=LIMITS.max_bytes, max_pixels=LIMITS.max_pixels, max_frames=4)
    assert reason_of(lambda: decode_image(data, SIZE, limits)) is ReasonCode.IMAGE_TOO_MANY_FRAMES
    first = decode_image(data, SIZE, ImageLimits(LIMITS.max_bytes, LIMITS.max_pixels, 5))
    assert first.getpixel((8, 8)) == (0, 0, 0)  # the first frame, not a later one


def test_png_bomb_is_refused_from_the_header(no_pixel_decoding: None) -> None:
    """4000x4000 zero pixels: 16 KB of PNG that inflates to 16 MB; refused with no decoder run."""
    bomb = png_bomb(4000, 4000, zlib.compress(b"\x00" * (4000 * 4001), 9))
    assert len(bomb) < 40_000
    limits = ImageLimits(max_bytes=LIMITS.max_bytes, max_pixels=1_000_000, max_frames=1)
    assert reason_of(lambda: decode_image(bomb, SIZE, limits)) is ReasonCode.IMAGE_TOO_MANY_PIXELS


def test_giant_png_header_is_refused_without_allocating() -> None:
    """A header claiming 100,000 x 100,000 pixels (30 GB as RGB): decoding it would exhaust memory."""
    bomb = png_bomb(100_000, 100_000, zlib.compress(b"\x00" * 1000))
    assert reason_of(lambda: decode_image(bomb, SIZE, LIMITS)) is ReasonCode.IMAGE_TOO_MANY_PIXELS
    # Under a huge limit of ours, Pillow's own guard (about 178 M pixels) refuses it, with the same code.
    limits = ImageLimits(max_bytes=LIMITS.max_bytes, max_pixels=10**12, max_frames=1)
    assert reason_of(lambda: decode_image(bomb, SIZE, limits)) is ReasonCode.IMAGE_TOO_MANY_PIXELS


def test_webp_canvas_is_checked_before_pillow_opens_it(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = animation(2)
    data = bytearray(encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:]))
    assert data[12:16] == b"VP8X"
    data[24:30] = (20_000 - 1).to_bytes(3, "little") * 2  # canvas 20000 x 20000

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Pillow opened the WebP")

    monkeypatch.setattr(Image, "open", refuse)
    assert reason_of(lambda: decode_image(bytes(data), SIZE, LIMITS)) is ReasonCode.IMAGE_TOO_MANY_PIXELS


@pytest.mark.parametrize("options", [{}, {"lossless": True}, {"exif": b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00"}])
def test_webp_header_size(options: dict[str, object]) -> None:
    assert _webp_size(encoded(photo(321, 123), "WEBP", **options)) == (321, 123)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
def test_truncated_data_is_corrupt(fmt: str) -> None:
    data = encoded(photo(), fmt)
    assert reason_of(lambda: decode_image(data[: len(data) // 2], SIZE, LIMITS)) is ReasonCode.IMAGE_CORRUPT


@pytest.mark.parametrize("magic", [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x10\x00\x00\x00WEBP"])
def test_garbage_after_magic_bytes_is_corrupt(magic: bytes) -> None:
    assert reason_of(lambda: decode_image(magic + b"\x00" * 64, SIZE, LIMITS)) is ReasonCode.IMAGE_CORRUPT


def test_large_jpeg_is_decoded_at_reduced_size() -> None:
    """2000x1500 needs only 1/4 scale to keep both sides >= 256: 500x375 is decoded, not 3 M pixels."""
    image = decode_image(encoded(photo(2000, 1500), "JPEG"), SIZE, LIMITS)
    assert image.size == (500, 375) and image.mode == "RGB"


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image = decode_image(encoded(photo(320, 240), "JPEG", exif=exif), SIZE, LIMITS)
    assert image.size == (240, 320)


def test_transparency_is_shown_over_white() -> None:
    clear = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert decode_image(encoded(clear, "PNG"), SIZE, LIMITS).getpixel((4, 4)) == (255, 255, 255)
    palette = Image.new("P", (8, 8), 0)
    assert decode_image(encoded(palette, "GIF", transparency=0), SIZE, LIMITS).getpixel((4, 4)) == (255, 255, 255)


def test_limits_from_settings() -> None:
    settings = load_settings(max_image_bytes=1234, max_image_pixels=5678, max_image_frames=9)
    assert ImageLimits.from_settings(settings) == ImageLimits(max_bytes=1234, max_pixels=5678, max_frames=9)
