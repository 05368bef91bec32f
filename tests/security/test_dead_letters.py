"""Dead-letter records: the original bytes kept for debugging, a retention on their topic, and media on a
known-bad list never copied into them or into a log line."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from moderation.contracts import SchemaName, validate
from moderation.embedded.stack import ensure_topics, topic_configs
from moderation.hashlists.entries import HashEntry
from moderation.hashlists.matcher import ListIndex
from moderation.hashlists.store import Snapshot
from moderation.observability.logs import JsonFormatter
from moderation.pipeline import Pipeline
from moderation.settings import load_settings
from moderation.types import RawRecord
from tests.conftest import Stack
from tests.security.hostile import encode, inline, png, post
from tests.security.report import SUMMARY


def dead_letters(pipeline: Pipeline, values: list[bytes], key: bytes | None = b"key") -> list[dict[str, Any]]:
    records = [RawRecord("posts", 0, offset, key, value, 0) for offset, value in enumerate(values)]
    result = pipeline.process(records)
    documents = [json.loads(m.value) for m in result.messages if m.topic == pipeline.settings.topic_dead_letter]
    for document in documents:
        validate(SchemaName.DEAD_LETTER, document)
    return sorted(documents, key=lambda d: d["source"]["offset"])


def test_the_original_bytes_are_kept_exactly_with_their_size_and_hash(security_pipeline: Pipeline) -> None:
    values = [b"\xff\xfe not utf-8", b"", encode(post("p", text=42)), b"[" * 5000]
    for value, document in zip(values, dead_letters(security_pipeline, values, key=b"\xffkey"), strict=True):
        assert base64.b64decode(document["original"]) == value
        assert document["original_size"] == len(value)
        assert document["original_sha256"] == hashlib.sha256(value).hexdigest()
        assert document["source"]["key"] == "\ufffdkey"  # a key that is not UTF-8 is shown, not dropped
        assert len(document["error"]) <= 4096


def test_a_record_that_would_not_fit_the_broker_withholds_the_original(security_pipeline: Pipeline) -> None:
    limit = security_pipeline.settings.max_message_bytes  # 200,000 in these tests; 900,000 by default
    fits = encode(post("fits", text="a" * (limit // 2)))  # base64 of it still fits
    too_big = encode(post("big", text="a" * (limit - 1000)))  # under the post limit, its base64 is not
    kept, withheld = dead_letters(security_pipeline, [fits, too_big])
    assert base64.b64decode(kept["original"]) == fits
    assert withheld["original_withheld_reason"] == "too_large" and "original" not in withheld
    assert withheld["original_size"] == len(too_big)
    assert withheld["original_sha256"] == hashlib.sha256(too_big).hexdigest()
    assert withheld["reason"] == "text_too_long"


def test_media_on_a_known_bad_list_is_never_copied_into_dead_letters_or_logs(
    security_pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bad = png(9, 7, (13, 37, 99))
    entry = HashEntry.create(
        "sha256", hashlib.sha256(bad).hexdigest(), "security-test", security_pipeline.model.categories[0], "test"
    )
    monkeypatch.setattr(security_pipeline.hashes, "index", ListIndex.build(Snapshot.of(1, [entry])))
    caplog.set_level(logging.DEBUG)
    limit = security_pipeline.settings.max_text_chars
    values = [
        encode(post("long-text", text="x" * (limit + 1), images=[inline(bad, "image/png")])),
        encode(post("truncated", images=[inline(bad, "image/png")]))[:-5],
        encode(post("lying", images=[inline(bad, "image/jpeg")])),
        encode({"not": "a post", "payload": base64.b64encode(bad).decode()}),
        encode(
            post("bad-and-broken", images=[inline(bad, "image/png"), inline(b"\x89PNG\r\n\x1a\nbroken", "image/png")])
        ),
    ]
    documents = dead_letters(security_pipeline, values)
    assert len(documents) == len(values)
    for document in documents:
        assert document["original_withheld_reason"] == "known_bad_media", document["reason"]
        assert not document.get("original")
    needles = [base64.b64encode(bad).decode(), bad.hex(), repr(bad)[2:40]]
    formatter = JsonFormatter()
    logged = caplog.text + "\n".join(formatter.format(record) for record in caplog.records)
    outgoing = json.dumps(documents)
    for needle in needles:
        assert needle not in logged
        assert needle not in outgoing


def test_the_dead_letter_topic_is_created_with_the_configured_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(dead_letter_retention_ms=3 * 24 * 3600 * 1000)
    assert topic_configs(settings, settings.topic_dead_letter) == {"retention.ms": "259200000"}
    assert topic_configs(settings, settings.topic_posts) == {}
    created: list[Any] = []

    class RecordingAdmin:
        def __init__(self, **options: Any) -> None:
            pass

        def list_topics(self) -> list[str]:
            return []

        def create_topics(self, topics: list[Any]) -> None:
            created.extend(topics)

        def close(self) -> None:
            pass

    import kafka.admin

    monkeypatch.setattr(kafka.admin, "KafkaAdminClient", RecordingAdmin)
    ensure_topics(settings, "127.0.0.1:9")
    configs = {topic.name: dict(topic.topic_configs) for topic in created}
    assert configs[settings.topic_dead_letter] == {"retention.ms": "259200000"}
    assert all(not c for name, c in configs.items() if name != settings.topic_dead_letter)


@pytest.mark.integration
def test_the_broker_accepts_the_dead_letter_retention(stack: Stack, tmp_path: Path) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    settings = stack.unique_topics(dead_letter_retention_ms=86_400_000)  # creates the topics with their configs
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="security-test")
    try:
        assert settings.topic_dead_letter in admin.list_topics()
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, settings.topic_dead_letter)])
    finally:
        admin.close()
    reported = _retention(described, settings.topic_dead_letter)
    if reported is None:
        SUMMARY.append(
            "dead-letter retention: retention.ms=86400000 sent with CreateTopics and accepted; this broker reports "
            "no topic configs back (Tansu 0.6.0), Apache Kafka enforces it"
        )
    else:
        assert reported == "86400000"
        SUMMARY.append("dead-letter retention: the broker reports retention.ms=86400000 on the dead-letter topic")


def _retention(described: Any, topic: str) -> str | None:
    """retention.ms from kafka-python's ``{resource type: {name: {config key: {"value": ...}}}}`` answer."""
    for resources in described.values():
        entry = resources.get(topic, {}).get("retention.ms")
        if entry is not None:
            return str(entry["value"] if isinstance(entry, dict) else entry)
    return None
