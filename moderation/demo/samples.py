"""A deterministic sample stream of mixed posts, built from data that installs offline.

Texts are real SMS messages (ham and spam, from the SMS Spam Collection); photos are the real textile photos of
``conformal-clip-data``, served by reference from the ``textile`` store or inline as base64. The stream holds every
shape the worker must handle: text only, image only, both, neither, several images, and malformed messages of
several kinds, each of which must come out as a dead-letter record with its reason.
"""

from __future__ import annotations

import base64
import io
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moderation.fuse.datasets import TEXTILE_STORE, sms_collection, textile_photos, textile_root
from moderation.types import ReasonCode

# Share of each shape in the stream; the malformed kinds cycle through MALFORMED.
SHAPES = (
    ("text", 0.40),
    ("image", 0.18),
    ("both", 0.25),
    ("neither", 0.04),
    ("several_images", 0.05),
    ("malformed", 0.08),
)


@dataclass(frozen=True)
class SampleStream:
    """The messages to send, and what each malformed one must produce."""

    messages: list[tuple[bytes, bytes]]  # (key: the post id, value)
    expected_rejections: dict[str, ReasonCode]  # post id (or key) -> reason
    shapes: dict[str, int]
    created_at: str  # every post's created-at: the moment the stream was built, just before it is sent

    @property
    def valid_posts(self) -> int:
        return len(self.messages) - len(self.expected_rejections)


def stores() -> dict[str, Path]:
    """The stores the sample stream references."""
    return {TEXTILE_STORE: textile_root()}


def build_sample_stream(
    count: int, seed: int = 7, run_id: str = "demo", shapes: tuple[tuple[str, float], ...] = SHAPES
) -> SampleStream:
    """``count`` messages drawn from ``shapes`` (name, share); post ids are ``<run_id>-<n>`` so runs never collide."""
    rng = random.Random(seed)
    texts = sms_collection()
    photos = textile_photos()
    created_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    names = [name for name, _ in shapes]
    weights = [share for _, share in shapes]
    messages: list[tuple[bytes, bytes]] = []
    expected: dict[str, ReasonCode] = {}
    drawn: dict[str, int] = {}
    malformed_index = 0
    for n in range(count):
        shape = rng.choices(names, weights)[0]
        drawn[shape] = drawn.get(shape, 0) + 1
        post_id = f"{run_id}-{n:05d}"
        post: dict[str, Any] = {
            "schema_version": "post.v1",
            "post_id": post_id,
            "tenant": "demo",
            "author_id": f"author-{rng.randrange(50)}",
            "created_at": created_at,
        }
        if shape in ("text", "both"):
            post["text"] = rng.choice(texts).text
        if shape in ("image", "both", "several_images"):
            chosen = rng.sample(photos, 3 if shape == "several_images" else 1)
            post["images"] = [_image(photo.key, inline=rng.random() < 0.3) for photo in chosen]
        if shape == "malformed":
            line, reason = MALFORMED[malformed_index % len(MALFORMED)](post)
            malformed_index += 1
            expected[post_id] = reason
        else:
            line = json.dumps(post).encode()
        messages.append((post_id.encode(), line))
    return SampleStream(messages=messages, expected_rejections=expected, shapes=drawn, created_at=created_at)


def _image(key: str, inline: bool) -> dict[str, Any]:
    if not inline:
        return {"ref": {"store": TEXTILE_STORE, "key": key, "content_type": "image/jpeg"}}
    data = (textile_root() / key).read_bytes()
    return {"inline": {"data": base64.b64encode(data).decode(), "content_type": "image/jpeg"}}


def _not_json(post: dict[str, Any]) -> tuple[bytes, ReasonCode]:
    return json.dumps(post).encode()[:-7], ReasonCode.NOT_JSON


def _wrong_type(post: dict[str, Any]) -> tuple[bytes, ReasonCode]:
    return json.dumps({**post, "text": 42}).encode(), ReasonCode.SCHEMA_INVALID


def _unknown_version(post: dict[str, Any]) -> tuple[bytes, ReasonCode]:
    return json.dumps({**post, "schema_version": "post.v7"}).encode(), ReasonCode.UNSUPPORTED_SCHEMA_VERSION


def _truncated_jpeg(post: dict[str, Any]) -> tuple[bytes, ReasonCode]:
    data = (textile_root() / textile_photos()[0].key).read_bytes()[:600]
    image = {"inline": {"data": base64.b64encode(data).decode(), "content_type": "image/jpeg"}}
    return json.dumps({**post, "images": [image]}).encode(), ReasonCode.IMAGE_CORRUPT


def _lying_content_type(post: dict[str, Any]) -> tuple[bytes, ReasonCode]:
    buffer = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, format="PNG")
    image = {"inline": {"data": base64.b64encode(buffer.getvalue()).decode(), "content_type": "image/jpeg"}}
    return json.dumps({**post, "images": [image]}).encode(), ReasonCode.IMAGE_CONTENT_TYPE_MISMATCH


def _escaping_key(post: dict[str, Any]) -> tuple[bytes, ReasonCode]:
    image = {"ref": {"store": TEXTILE_STORE, "key": "../../../../etc/passwd", "content_type": "image/jpeg"}}
    return json.dumps({**post, "images": [image]}).encode(), ReasonCode.STORE_KEY_ESCAPES


def _unknown_store(post: dict[str, Any]) -> tuple[bytes, ReasonCode]:
    image = {"ref": {"store": "nowhere", "key": "a.jpg", "content_type": "image/jpeg"}}
    return json.dumps({**post, "images": [image]}).encode(), ReasonCode.STORE_UNKNOWN


MALFORMED = (
    _not_json,
    _wrong_type,
    _unknown_version,
    _truncated_jpeg,
    _lying_content_type,
    _escaping_key,
    _unknown_store,
)
