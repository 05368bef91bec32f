"""Build the published messages: ``verdict.v1`` and ``dead_letter.v1``.

A verdict is built in two parts. The decision fields (everything but ``timings`` and ``published_at``) are
serialised once, stored in Redis with SET NX, and published as stored, so a replay publishes exactly what was
first decided; the publish fields are added to each copy at publish time.

Verdicts are serialised and re-read with orjson, once per post: the standard library's ``json`` took about 27 µs
of a post's host work for the two (14 µs to write the decision fields, 7 µs to read them back), orjson about 5.
Its output differs only where JSON allows it to (non-ASCII text as UTF-8 rather than ``\\u`` escapes), and it
refuses what ``json`` would write but JSON forbids (NaN, which :func:`decision_fields` rejects first anyway).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from moderation.decide.policy import Decision
from moderation.errors import ModelError
from moderation.types import DecodedPost, Rejection

SCORE_DIGITS = 6


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def decision_fields(
    post: DecodedPost,
    decision: Decision,
    driven_by: Mapping[str, tuple[str, int | None]],
    model_version: str,
    policy_version: str,
) -> bytes:
    """The verdict's decision fields as canonical JSON bytes (sorted keys, rounded scores)."""
    categories: dict[str, Any] = {}
    for category, result in decision.categories.items():
        if not math.isfinite(result.score):
            raise ModelError(f"the model gave a non-finite score for {category!r} (post {post.post_id!r})")
        modality, image_index = driven_by.get(category, ("none", None))
        entry: dict[str, Any] = {
            "score": round(result.score, SCORE_DIGITS),
            "decision": result.decision.value,
            "mode": result.mode,
            "driven_by": {"modality": modality, "image_index": image_index},
        }
        if result.would_be_action is not None:
            entry["would_be_action"] = result.would_be_action.value
        categories[category] = entry
    document = {
        "schema_version": "verdict.v1",
        "post_id": post.post_id,
        "tenant": post.tenant,
        "content_hash": post.content_hash,
        "categories": categories,
        "action": decision.action.value,
        "modalities_present": [m.value for m in post.modalities],
        "model_version": model_version,
        "policy_version": policy_version,
        "automated": True,
        "reasons": [{**reason.as_json(), "score": round(reason.score, SCORE_DIGITS)} for reason in decision.reasons],
    }
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def verdict_message(stored_decision: bytes, timings_ms: Mapping[str, float]) -> tuple[bytes, dict[str, Any]]:
    """The publishable verdict: stored decision fields plus timings and publish time, and its parsed document.

    The publish fields are appended to the stored bytes (a JSON object that :func:`decision_fields` wrote, which
    never holds them) instead of serialising the whole verdict again.
    """
    document: dict[str, Any] = orjson.loads(stored_decision)
    if not stored_decision.endswith(b"}"):
        raise ModelError("a stored decision is not a JSON object; clear the verdict cache")
    publish_fields = {
        "timings": {name: round(value, 3) for name, value in timings_ms.items()},
        "published_at": utc_now(),
    }
    document.update(publish_fields)
    tail = orjson.dumps(publish_fields)
    return stored_decision[:-1] + b"," + tail[1:], document


def dead_letter_message(rejection: Rejection, *, withhold_original: str | None = None) -> bytes:
    """A ``dead_letter.v1`` record with the original bytes (base64), unless they must be withheld."""
    record = rejection.record
    document: dict[str, Any] = {
        "schema_version": "dead_letter.v1",
        "source": {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "key": record.key.decode("utf-8", errors="replace") if record.key is not None else None,
        },
        "reason": rejection.reason.value,
        "error": rejection.detail[:4000],
        "post_id": rejection.post_id,
        "failed_at": utc_now(),
        "original_size": len(record.value),
        "original_sha256": hashlib.sha256(record.value).hexdigest(),
    }
    if withhold_original is None:
        document["original"] = base64.b64encode(record.value).decode()
    else:
        document["original_withheld_reason"] = withhold_original
    return json.dumps(document, separators=(",", ":")).encode()
