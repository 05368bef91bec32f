"""The verdict's bytes: canonical decision fields, publish fields appended, valid against the schema."""

from __future__ import annotations

import json

import pytest

from moderation.contracts import SchemaName, validate
from moderation.decide.policy import CategoryDecision, Decision, Reason
from moderation.decode.post import content_hash
from moderation.errors import ModelError
from moderation.publish.messages import decision_fields, verdict_message
from moderation.types import Action, DecodedPost, RawRecord


def _post(post_id: str = "p-1", tenant: str = "t") -> DecodedPost:
    record = RawRecord("posts", 0, 7, post_id.encode(), b"{}", 0)
    return DecodedPost(record, post_id, tenant, "2026-01-01T00:00:00.000Z", "héllo", (), content_hash("héllo", ()))


def _decision(spam: float = 0.8123456789) -> Decision:
    return Decision(
        Action.REVIEW,
        {
            "spam": CategoryDecision(spam, Action.REVIEW, "enforce", None),
            "csam": CategoryDecision(0.01, Action.ALLOW, "observe", Action.ALLOW),
        },
        (Reason("score_at_or_above_review_threshold", "spam", spam, 0.7, "spam.review"),),
    )


def test_decision_fields_are_canonical_and_valid() -> None:
    fields = decision_fields(_post(), _decision(), {"spam": ("text", None)}, "m1", "p1")
    document = json.loads(fields)
    assert fields == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()  # sorted, compact
    assert document["categories"]["spam"]["score"] == 0.812346  # rounded to 6 digits
    assert document["categories"]["csam"]["driven_by"] == {"modality": "none", "image_index": None}
    assert fields == decision_fields(_post(), _decision(), {"spam": ("text", None)}, "m1", "p1")  # deterministic
    validate(SchemaName.VERDICT, {**document, "published_at": "2026-01-01T00:00:00.000Z"})


def test_non_ascii_text_is_written_as_utf8_and_reads_back() -> None:
    post = _post(post_id="ポスト-1", tenant="café")
    fields = decision_fields(post, _decision(), {}, "m1", "p1")
    assert "ポスト-1".encode() in fields and b"\\u" not in fields
    assert json.loads(fields)["post_id"] == "ポスト-1" and json.loads(fields)["tenant"] == "café"


def test_verdict_message_appends_the_publish_fields() -> None:
    fields = decision_fields(_post(), _decision(), {}, "m1", "p1")
    message, document = verdict_message(fields, {"decode_ms": 1.23456, "encode_ms": 2.0})
    assert message.startswith(fields[:-1] + b',"timings":')
    assert json.loads(message) == document
    assert document["timings"] == {"decode_ms": 1.235, "encode_ms": 2.0}
    validate(SchemaName.VERDICT, document)


def test_a_non_finite_score_is_refused() -> None:
    with pytest.raises(ModelError, match="non-finite score for 'spam'"):
        decision_fields(_post(), _decision(spam=float("nan")), {}, "m1", "p1")
