"""Post decoding: every class of bad message gets its reason code; good posts keep their content."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from moderation.decode.post import PostDecoder, content_hash
from moderation.decode.stores import StoreRegistry
from moderation.settings import load_settings
from moderation.types import DecodedPost, Modality, RawRecord, ReasonCode, Rejection

PNG_1x1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def post(**fields: Any) -> dict[str, Any]:
    base = {
        "schema_version": "post.v1",
        "post_id": "p1",
        "tenant": "acme",
        "author_id": "u1",
        "created_at": "2026-11-27T10:00:00Z",
    }
    base.update(fields)
    return base


def inline(data: bytes = PNG_1x1, content_type: str = "image/png") -> dict[str, Any]:
    return {"inline": {"data": base64.b64encode(data).decode(), "content_type": content_type}}


@pytest.fixture
def decoder(tmp_path: Path) -> PostDecoder:
    (tmp_path / "img.png").write_bytes(PNG_1x1)
    settings = load_settings(
        max_text_chars=50,
        max_images_per_post=3,
        max_image_bytes=1000,
        max_json_depth=8,
        max_message_bytes=10_000,
        stores={"media": str(tmp_path)},
    )
    return PostDecoder(settings, StoreRegistry.from_folders(settings.stores))


def decode(decoder: PostDecoder, value: bytes | dict[str, Any]) -> DecodedPost | Rejection:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return decoder.decode(RawRecord("posts", 0, 7, b"p1", raw, 0))


def test_a_post_of_every_shape_decodes(decoder: PostDecoder) -> None:
    ref = {"ref": {"store": "media", "key": "img.png", "content_type": "image/png"}}
    shapes = {
        (): post(),
        (Modality.TEXT,): post(text="hello"),
        (Modality.IMAGE,): post(images=[inline(), ref]),
        (Modality.TEXT, Modality.IMAGE): post(text="hi", images=[ref]),
    }
    for modalities, document in shapes.items():
        result = decode(decoder, document)
        assert isinstance(result, DecodedPost), result
        assert result.modalities == modalities
    both = decode(decoder, post(text="hi", images=[ref]))
    assert isinstance(both, DecodedPost) and both.images[0].data == PNG_1x1


def test_content_hash_depends_on_content_only(decoder: PostDecoder) -> None:
    first = decode(decoder, post(text="same", images=[inline()]))
    second = decode(decoder, post(post_id="p2", text="same", images=[inline()], metadata={"k": "v"}))
    other = decode(decoder, post(text="different", images=[inline()]))
    assert isinstance(first, DecodedPost) and isinstance(second, DecodedPost) and isinstance(other, DecodedPost)
    assert first.content_hash == second.content_hash != other.content_hash
    assert first.content_hash == content_hash("same", first.images)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe not utf8", ReasonCode.NOT_UTF8),
        (b"{not json", ReasonCode.NOT_JSON),
        (b"[" * 20 + b"]" * 20, ReasonCode.TOO_DEEP),
        (b"[" * 100_000, ReasonCode.MESSAGE_TOO_LARGE),
        (b"[1, 2]", ReasonCode.SCHEMA_INVALID),
        (b'{"post_id": "p1"}', ReasonCode.UNSUPPORTED_SCHEMA_VERSION),
        (post(schema_version="post.v9"), ReasonCode.UNSUPPORTED_SCHEMA_VERSION),
        (post(post_id=5), ReasonCode.SCHEMA_INVALID),
        (post(tenant=None), ReasonCode.SCHEMA_INVALID),
        (post(images=[{"url": "http://169.254.169.254/"}]), ReasonCode.SCHEMA_INVALID),
        (post(text="x" * 51), ReasonCode.TEXT_TOO_LONG),
        (post(images=[inline()] * 4), ReasonCode.TOO_MANY_IMAGES),
        (post(images=[{"inline": {"data": "!!!notbase64", "content_type": "image/png"}}]), ReasonCode.INVALID_BASE64),
        (post(images=[{"inline": {"data": "QUJD\nREVG", "content_type": "image/png"}}]), ReasonCode.INVALID_BASE64),
        (post(images=[{"inline": {"data": "QUJDé", "content_type": "image/png"}}]), ReasonCode.INVALID_BASE64),
        (post(images=[{"inline": {"data": "QUJ", "content_type": "image/png"}}]), ReasonCode.INVALID_BASE64),
        (post(images=[inline(b"x" * 2000)]), ReasonCode.IMAGE_TOO_LARGE),
        (
            post(images=[{"ref": {"store": "media", "key": "../etc", "content_type": "image/png"}}]),
            ReasonCode.STORE_KEY_ESCAPES,
        ),
        (
            post(images=[{"ref": {"store": "nope", "key": "img.png", "content_type": "image/png"}}]),
            ReasonCode.STORE_UNKNOWN,
        ),
        (
            post(images=[{"ref": {"store": "media", "key": "gone.png", "content_type": "image/png"}}]),
            ReasonCode.STORE_OBJECT_MISSING,
        ),
    ],
)
def test_bad_messages_get_their_reason(decoder: PostDecoder, value: bytes | dict[str, Any], reason: ReasonCode) -> None:
    result = decode(decoder, value)
    assert isinstance(result, Rejection), result
    assert result.reason is reason, result.detail
    assert result.record.offset == 7


def test_the_post_id_is_kept_on_rejection_when_readable(decoder: PostDecoder) -> None:
    kept = decode(decoder, post(text="x" * 51))
    dropped = decode(decoder, post(post_id="p" * 200))
    assert isinstance(kept, Rejection) and kept.post_id == "p1"
    assert isinstance(dropped, Rejection) and dropped.post_id is None
