"""The catalogue of hostile input classes: one message per class, with the reason code it must be refused with.

Used by the end-to-end test (one message per class through a real worker) and as seeds of the property test.
Every payload is built here, offline and deterministically: images with Pillow, bombs and truncations by hand.
"""

from __future__ import annotations

import base64
import io
import json
import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from moderation.types import ReasonCode

CREATED_AT = "2026-11-27T10:00:00Z"
STORE = "media"
#: The post limit a worker keeps below the broker's: Apache Kafka refuses messages over 1,048,588 bytes by default.
APACHE_KAFKA_DEFAULT_MESSAGE_MAX_BYTES = 1_048_588


@dataclass(frozen=True)
class HostileCase:
    """One input class: its name (also the Kafka key), the message bytes, and the expected outcome."""

    name: str
    value: bytes
    reason: ReasonCode | None  # None: a control post that must get a verdict
    key: str = ""  # the Kafka key, when not the name: a verdict is keyed by its post id

    @property
    def kafka_key(self) -> str:
        return self.key or self.name


def post(post_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "schema_version": "post.v1",
        "post_id": post_id,
        "tenant": "security",
        "author_id": "mallory",
        "created_at": CREATED_AT,
        **fields,
    }


def encode(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def inline(data: bytes, content_type: str) -> dict[str, Any]:
    return {"inline": {"data": base64.b64encode(data).decode(), "content_type": content_type}}


def ref(key: str, content_type: str = "image/png", store: str = STORE) -> dict[str, Any]:
    return {"ref": {"store": store, "key": key, "content_type": content_type}}


# --- media --------------------------------------------------------------------------------------------------
def png(width: int = 8, height: int = 8, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(width: int = 256, height: int = 256, seed: int = 7) -> bytes:
    """A JPEG of seeded noise: the same bytes on every run."""
    pixels = random.Random(seed).randbytes(width * height * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid PNG header for ``width`` x ``height`` grey pixels with a tiny, highly compressed first IDAT chunk:
    a few KB that would inflate to ``width * height`` bytes (400 MB by default) if decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * ((width + 1) * 64), 9)  # the first 64 rows; the decoder would want them all
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def animated_gif(frames: int = 3000) -> bytes:
    """A 1x1 GIF animation of ``frames`` alternating black and white frames (about 37 bytes a frame)."""
    images = [Image.new("P", (1, 1), i % 2) for i in range(frames)]
    for image in images:
        image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=10, loop=0)
    return buffer.getvalue()


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>fetch("http://169.254.169.254/")</script></svg>'
HTML = b'<!DOCTYPE html><html><body><img src="http://169.254.169.254/latest/meta-data/"></body></html>'


def make_store(root: Path, outside: Path) -> dict[str, Path]:
    """A store folder with one real image, an oversized object and a symlink that leads out of it."""
    root.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    (root / "ok.png").write_bytes(png())
    (root / "nested").mkdir(exist_ok=True)
    (root / "nested" / "ok.jpg").write_bytes(jpeg(32, 32))
    (outside / "secret.png").write_bytes(png(4, 4, (1, 2, 3)))
    link = root / "link.png"
    if not link.is_symlink():
        link.symlink_to(outside / "secret.png")
    return {STORE: root}


def catalogue(max_text_chars: int, max_images: int, max_message_bytes: int) -> list[HostileCase]:
    """Every hostile input class, plus two control posts that must still get verdicts among them."""
    cases: list[HostileCase] = []

    def add(name: str, value: bytes, reason: ReasonCode | None, key: str = "") -> None:
        cases.append(HostileCase(name, value, reason, key))

    add("control: text post", encode(post("control-text", text="see you at lunch tomorrow")), None, "control-text")
    add(
        "control: text + stored image",
        encode(post("control-image", text="my cat", images=[ref("ok.png")])),
        None,
        "control-image",
    )
    # --- bytes and JSON -------------------------------------------------------------------------------------
    add("empty message", b"", ReasonCode.NOT_JSON)
    add("non-JSON bytes", b"\x00\x01GET / HTTP/1.1\r\nHost: x\r\n\r\n", ReasonCode.NOT_JSON)
    add("truncated JSON", encode(post("truncated", text="hi"))[:-9], ReasonCode.NOT_JSON)
    add("invalid UTF-8", b'{"schema_version":"post.v1","text":"\xff\xfe\xc3\x28"}', ReasonCode.NOT_UTF8)
    add("CESU-8 surrogate bytes", '{"text":"\ud800"}'.encode("utf-8", "surrogatepass"), ReasonCode.NOT_UTF8)
    add(
        "escaped lone surrogate in post_id",
        encode(post("x")).replace(b'"post_id":"x"', b'"post_id":"\\ud800"'),
        ReasonCode.NOT_UTF8,
    )
    add("NaN in JSON", encode(post("nan", metadata={"n": 1})).replace(b'"n":1', b'"n":NaN'), ReasonCode.NOT_JSON)
    add("integer of 5000 digits", b'{"n":' + b"9" * 5000 + b"}", ReasonCode.NOT_JSON)
    add("deep nesting (100k brackets)", b"[" * 100_000 + b"]" * 100_000, ReasonCode.TOO_DEEP)
    nested: Any = "x"
    for _ in range(40):
        nested = {"k": nested}
    add(
        "deep nesting (40 levels)",
        encode(post("deep", metadata={"m": 1}, text="t")).replace(b'"m":1', b'"m":' + encode(nested)),
        ReasonCode.TOO_DEEP,
    )
    # --- shape, types and version ---------------------------------------------------------------------------
    add("JSON array instead of object", b"[1,2,3]", ReasonCode.SCHEMA_INVALID)
    add("JSON string instead of object", b'"post.v1"', ReasonCode.SCHEMA_INVALID)
    add("object without schema_version", b'{"hello":"world"}', ReasonCode.UNSUPPORTED_SCHEMA_VERSION)
    add(
        "missing required fields",
        encode({"schema_version": "post.v1", "post_id": "missing"}),
        ReasonCode.SCHEMA_INVALID,
    )
    add("wrong type: text is a number", encode(post("wrong-type", text=42)), ReasonCode.SCHEMA_INVALID)
    add(
        "wrong type: images is an object",
        encode(post("wrong-images", images={"0": ref("ok.png")})),
        ReasonCode.SCHEMA_INVALID,
    )
    add("unknown extra field", encode(post("extra", admin=True)), ReasonCode.SCHEMA_INVALID)
    add(
        "unknown schema version",
        encode({**post("v7"), "schema_version": "post.v7"}),
        ReasonCode.UNSUPPORTED_SCHEMA_VERSION,
    )
    add(
        "URL as a store key",
        encode(post("url-key", images=[ref("http://169.254.169.254/latest/meta-data/")])),
        ReasonCode.SCHEMA_INVALID,
    )
    add(
        "URL in place of an image",
        encode(post("url-image", images=[{"url": "https://example.com/a.png"}])),
        ReasonCode.SCHEMA_INVALID,
    )
    # --- limits -------------------------------------------------------------------------------------------------
    add(
        f"text of {max_text_chars + 1} chars (limit {max_text_chars})",
        encode(post("long-text", text="a" * (max_text_chars + 1))),
        ReasonCode.TEXT_TOO_LONG,
    )
    padding = max_message_bytes + 50_000 - len(encode(post("huge", text="")))
    add(
        f"message of {max_message_bytes + 50_000} bytes (limit {max_message_bytes})",
        encode(post("huge", text="b" * padding)),
        ReasonCode.MESSAGE_TOO_LARGE,
    )
    tiny = inline(png(1, 1), "image/png")
    add(
        f"300 images in one post (limit {max_images})",
        encode(post("many-images", images=[tiny] * 300)),
        ReasonCode.TOO_MANY_IMAGES,
    )
    # --- media ----------------------------------------------------------------------------------------------------
    whole = jpeg()
    add(
        "truncated JPEG",
        encode(post("truncated-jpeg", images=[inline(whole[: len(whole) // 2], "image/jpeg")])),
        ReasonCode.IMAGE_CORRUPT,
    )
    add(
        "PNG decompression bomb (20000x20000)",
        encode(post("png-bomb", images=[inline(png_bomb(), "image/png")])),
        ReasonCode.IMAGE_TOO_MANY_PIXELS,
    )
    add(
        "animated GIF, 3000 frames",
        encode(post("gif-frames", images=[inline(animated_gif(), "image/gif")])),
        ReasonCode.IMAGE_TOO_MANY_FRAMES,
    )
    add(
        "SVG declared as image/svg+xml",
        encode(post("svg", images=[inline(SVG, "image/svg+xml")])),
        ReasonCode.IMAGE_UNSUPPORTED_TYPE,
    )
    add(
        "HTML declared as image/png",
        encode(post("html", images=[inline(HTML, "image/png")])),
        ReasonCode.IMAGE_UNSUPPORTED_TYPE,
    )
    add(
        "PNG declared as image/jpeg",
        encode(post("lying-type", images=[inline(png(), "image/jpeg")])),
        ReasonCode.IMAGE_CONTENT_TYPE_MISMATCH,
    )
    add(
        "invalid base64",
        encode(post("bad-b64", images=[{"inline": {"data": "!!!not*base64", "content_type": "image/png"}}])),
        ReasonCode.INVALID_BASE64,
    )
    # --- stores -------------------------------------------------------------------------------------------------
    add(
        "store object that does not exist",
        encode(post("missing-object", images=[ref("nope.png")])),
        ReasonCode.STORE_OBJECT_MISSING,
    )
    add(
        "store key with ..", encode(post("dotdot", images=[ref("../outside/secret.png")])), ReasonCode.STORE_KEY_ESCAPES
    )
    add(
        "store key nested ..",
        encode(post("nested-dotdot", images=[ref("nested/../../outside/secret.png")])),
        ReasonCode.STORE_KEY_ESCAPES,
    )
    add("absolute store key", encode(post("absolute", images=[ref("/etc/passwd")])), ReasonCode.STORE_KEY_ESCAPES)
    add("symlink out of the store", encode(post("symlink", images=[ref("link.png")])), ReasonCode.STORE_KEY_ESCAPES)
    add(
        "unconfigured store",
        encode(post("unknown-store", images=[ref("ok.png", store="backups")])),
        ReasonCode.STORE_UNKNOWN,
    )
    return cases
