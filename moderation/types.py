"""Shared vocabulary of the pipeline: enums for modalities, actions and reason codes.

These are the values that cross stage boundaries and appear in published messages, so they are enums (the
JSON schemas list the same strings) rather than magic strings or ints.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Modality(enum.StrEnum):
    """A kind of content a post may carry. Missing modalities are explicit, never zero vectors."""

    TEXT = "text"
    IMAGE = "image"


class Action(enum.StrEnum):
    """The overall decision on a post, ordered from least to most severe."""

    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.ALLOW: 0, Action.REVIEW: 1, Action.BLOCK: 2}


class ReasonCode(enum.StrEnum):
    """Machine-readable reasons why a message became a dead-letter record (``dead_letter.v1``)."""

    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    TOO_DEEP = "too_deep"
    SCHEMA_INVALID = "schema_invalid"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    MESSAGE_TOO_LARGE = "message_too_large"
    TEXT_TOO_LONG = "text_too_long"
    TOO_MANY_IMAGES = "too_many_images"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_TOO_MANY_PIXELS = "image_too_many_pixels"
    IMAGE_TOO_MANY_FRAMES = "image_too_many_frames"
    IMAGE_UNSUPPORTED_TYPE = "image_unsupported_type"
    IMAGE_CONTENT_TYPE_MISMATCH = "image_content_type_mismatch"
    IMAGE_CORRUPT = "image_corrupt"
    INVALID_BASE64 = "invalid_base64"
    STORE_UNKNOWN = "store_unknown"
    STORE_KEY_ESCAPES = "store_key_escapes"
    STORE_OBJECT_MISSING = "store_object_missing"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True)
class RawRecord:
    """One message as the stream client delivered it: the bytes and where they came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


@dataclass(frozen=True)
class ImageInput:
    """One image of a post: its encoded bytes, declared type and SHA-256 (the cache key and hash-list key)."""

    data: bytes = field(repr=False)
    declared_type: str
    sha256: str


@dataclass(frozen=True)
class DecodedPost:
    """A post that passed validation and limits; ``text`` is the raw text (normalised only inside encoders)."""

    record: RawRecord
    post_id: str
    tenant: str
    created_at: str
    text: str | None
    images: tuple[ImageInput, ...]
    content_hash: str

    @property
    def modalities(self) -> tuple[Modality, ...]:
        present = []
        if self.text:
            present.append(Modality.TEXT)
        if self.images:
            present.append(Modality.IMAGE)
        return tuple(present)


@dataclass(frozen=True)
class Rejection:
    """Why a message cannot be processed: becomes one ``dead_letter.v1`` record carrying the original bytes."""

    record: RawRecord
    reason: ReasonCode
    detail: str
    post_id: str | None = None
