"""Thousands of random and mutated messages through the real pipeline: it never raises, never loses a message, and
every message ends as exactly one schema-valid verdict or one schema-valid dead-letter record.

The pipeline is the one a worker runs (``build_pipeline``: the model, both encoders, the policy, the stores), in
this process and without Redis. Inputs are batches of 1-3 messages drawn from: raw bytes, random JSON, deep
bracket runs, valid posts, and valid posts mutated (retyped, extra or missing keys, nesting, huge and non-finite
numbers, tricky Unicode, garbage media, escaping store keys) and then possibly damaged byte by byte (flips,
truncation, insertion, CESU-8). Valid texts are short, so the run stays within its time budget on a CPU.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from moderation.contracts import SchemaName, validate
from moderation.pipeline import Pipeline
from moderation.types import RawRecord
from tests.security.hostile import STORE, catalogue, inline, jpeg, png, post, ref
from tests.security.report import SUMMARY

TOPIC = "posts"
DEFAULT_EXAMPLES = 2000
SLOW_EXAMPLES = 20_000

STATS: Counter[str] = Counter()


# --- strategies -------------------------------------------------------------------------------------------------
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
TRICKY_TEXT = st.sampled_from(
    [
        "\u202eevil\u202c",  # right-to-left override
        "\ufeffBOM",
        "nul\x00byte",
        "zalgo" + "\u0351" * 50,
        "𝕳𝖊𝖑𝖑𝖔 🙂",
        "\ud800",  # lone surrogate: must not reach the encoders or Kafka keys
        "\udfff tail",
        "e\u0301\u0301",
        "\U0010ffff",
        "",
        " ",
        "<script>alert(1)</script>",
        "${jndi:ldap://169.254.169.254/a}",
        "'; DROP TABLE posts; --",
    ]
)
IMAGE_POOL = [png(), png(3, 5, (0, 0, 255)), jpeg(24, 16)]
ESCAPING_KEYS = st.sampled_from(
    [
        "../outside/secret.png",
        "/etc/passwd",
        "link.png",
        "nested/../../outside/secret.png",
        "nested/../ok.png",
        "./ok.png",
        "ok.png/",
        "%2e%2e/outside/secret.png",
        "..\\outside\\secret.png",
        "nested",
        "nope.png",
        "ok.png\u0000.jpg",
        "\ud800.png",
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data/",
        "a" * 1025,
    ]
)
CONTENT_TYPES = st.sampled_from(
    ["image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml", "IMAGE/PNG", "text/html", "image/x-png"]
)


@st.composite
def images(draw: st.DrawFn) -> dict[str, Any]:
    index = draw(st.integers(0, len(IMAGE_POOL) - 1))
    data = IMAGE_POOL[index]
    content_type = "image/jpeg" if index == 2 else "image/png"
    if draw(st.booleans()):
        return inline(data, content_type)
    return ref("nested/ok.jpg" if index == 2 else "ok.png", content_type)


@st.composite
def valid_posts(draw: st.DrawFn) -> dict[str, Any]:
    document = post(draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FFF), min_size=1, max_size=12)))
    if draw(st.booleans()):
        document["text"] = draw(st.text(max_size=40))
    if draw(st.integers(0, 4)) == 0:
        document["images"] = draw(st.lists(images(), max_size=2))
    if draw(st.booleans()):
        document["metadata"] = draw(
            st.dictionaries(st.text(min_size=1, max_size=6), st.integers() | st.text(max_size=8), max_size=3)
        )
    return document


@st.composite
def mutated_posts(draw: st.DrawFn) -> dict[str, Any]:
    document = draw(valid_posts())
    mutation = draw(
        st.sampled_from(["retype", "add_key", "drop_key", "nest", "number", "unicode", "media", "store", "images"])
    )
    fields = [*document, "text", "images", "metadata", "language"]
    if mutation == "retype":
        document[draw(st.sampled_from(fields))] = draw(JSON_VALUES)
    elif mutation == "add_key":
        target = document if draw(st.booleans()) else document.setdefault("metadata", {})
        target[draw(st.text(max_size=70))] = draw(JSON_VALUES)
    elif mutation == "drop_key":
        document.pop(draw(st.sampled_from(list(document))), None)
    elif mutation == "nest":
        key = draw(st.sampled_from(fields))
        value: Any = document.get(key, "x")
        for _ in range(draw(st.integers(1, 60))):
            value = [value] if draw(st.booleans()) else {"n": value}
        document[key] = value
    elif mutation == "number":
        huge = draw(st.sampled_from([10**30, 2**63, -(2**64), 1e308, 5e-324, 10**300, float("inf"), float("nan")]))
        document[draw(st.sampled_from(fields))] = huge
    elif mutation == "unicode":
        document[draw(st.sampled_from(["text", "post_id", "author_id", "tenant"]))] = draw(TRICKY_TEXT)
    elif mutation == "media":
        garbage = draw(st.binary(max_size=64))
        real = base64.b64encode(draw(st.sampled_from(IMAGE_POOL))).decode()
        data = draw(st.sampled_from([base64.b64encode(garbage).decode(), garbage.hex(), "====", "A" * 5, real, real]))
        document["images"] = [{"inline": {"data": data, "content_type": draw(CONTENT_TYPES)}}]
    elif mutation == "store":
        store = draw(st.sampled_from([STORE, STORE, STORE, "backups", "media.", ""]))
        document["images"] = [ref(draw(ESCAPING_KEYS), draw(CONTENT_TYPES), store=store)]
    else:
        document["images"] = draw(st.lists(images(), min_size=5, max_size=8))
    return document


def serialise(document: Any, ascii_only: bool) -> bytes:
    text = json.dumps(document, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def damaged(draw: st.DrawFn, value: bytes) -> bytes:
    data = bytearray(value)
    kind = draw(st.sampled_from(["none", "none", "none", "none", "flip", "truncate", "insert", "duplicate"]))
    if not data or kind == "none":
        return bytes(data)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= draw(st.integers(1, 255))
    elif kind == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "insert":
        position = draw(st.integers(0, len(data)))
        data[position:position] = draw(st.binary(min_size=1, max_size=8))
    else:
        start = draw(st.integers(0, len(data) - 1))
        data[start:start] = data[start : start + draw(st.integers(1, 32))]
    return bytes(data)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    source = draw(st.sampled_from(["bytes", "json", "brackets", "valid", "mutated", "mutated", "mutated"]))
    if source == "bytes":
        return draw(st.binary(max_size=300))
    if source == "json":
        return serialise(draw(JSON_VALUES), draw(st.booleans()))
    if source == "brackets":
        depth = draw(st.integers(1, 5000))
        return b"[" * depth + b"]" * draw(st.sampled_from([depth, 0, depth - 1]))
    document = draw(valid_posts()) if source == "valid" else draw(mutated_posts())
    value = serialise(document, draw(st.booleans()))
    return value if source == "valid" else draw(damaged(value))


# --- the property -----------------------------------------------------------------------------------------------
def check_batch(pipeline: Pipeline, values: list[bytes]) -> None:
    """One batch through ``Pipeline.process``: nothing raised, nothing lost, everything schema-valid."""
    records = [RawRecord(TOPIC, 0, offset, f"k{offset}".encode(), value, 0) for offset, value in enumerate(values)]
    result = pipeline.process(records)  # must not raise, whatever the bytes
    rejected = [rejection.record.offset for rejection in result.rejections]
    assert len(set(rejected)) == len(rejected), "a message was rejected twice"
    accepted = [r for r in records if r.offset not in set(rejected)]
    assert len(result.verdicts) == len(accepted), "a message got neither a verdict nor a dead-letter record"
    assert Counter(str(v["post_id"]) for v in result.verdicts) == Counter(
        str(json.loads(r.value)["post_id"]) for r in accepted
    )
    by_topic = Counter(message.topic for message in result.messages)
    assert by_topic[pipeline.settings.topic_verdicts] == len(result.verdicts)
    assert by_topic[pipeline.settings.topic_dead_letter] == len(result.rejections)
    for message in result.messages:
        document = json.loads(message.value)
        if message.topic == pipeline.settings.topic_dead_letter:
            validate(SchemaName.DEAD_LETTER, document)
            original = records[document["source"]["offset"]].value
            if "original_withheld_reason" in document:
                assert document["original_withheld_reason"] == "too_large"
                assert len(original) * 4 // 3 > pipeline.settings.max_message_bytes - 8192
            else:
                assert base64.b64decode(document["original"]) == original
            assert message.key == records[document["source"]["offset"]].key
        else:
            validate(SchemaName.VERDICT, document)
            assert message.key == str(document["post_id"]).encode()
    STATS["batches"] += 1
    STATS["messages"] += len(records)
    STATS["verdicts"] += len(result.verdicts)
    for rejection in result.rejections:
        STATS[f"dead letter: {rejection.reason.value}"] += 1


def _seeds() -> list[bytes]:
    return [case.value for case in catalogue(2000, 4, 200_000)]


def _with_catalogue(test: Any) -> Any:
    for value in _seeds():
        test = example(values=[value])(test)
    return test


@pytest.fixture(scope="module")
def stats() -> Iterator[Counter[str]]:
    """Counts over every batch of the module, summarised in the closing report."""
    STATS.clear()
    started = time.perf_counter()
    yield STATS
    if STATS:
        reasons = ", ".join(
            f"{k.removeprefix('dead letter: ')} {v}" for k, v in sorted(STATS.items()) if k.startswith("dead")
        )
        SUMMARY.append(
            f"property test: {STATS['batches']} batches ({STATS['messages']} random and mutated messages) checked in "
            f"{time.perf_counter() - started:.0f} s: {STATS['verdicts']} verdicts, "
            f"{STATS['messages'] - STATS['verdicts']} dead letters ({reasons}); in every checked batch nothing "
            "raised, nothing was lost and every message was schema-valid"
        )


HYPOTHESIS = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}


@_with_catalogue
@settings(max_examples=DEFAULT_EXAMPLES, derandomize=True, **HYPOTHESIS)  # type: ignore[arg-type]
@given(values=st.lists(messages(), min_size=1, max_size=3))
def test_random_and_mutated_messages_never_crash_and_are_never_lost(
    security_pipeline: Pipeline, stats: Counter[str], values: list[bytes]
) -> None:
    check_batch(security_pipeline, values)


@pytest.mark.slow
@settings(max_examples=SLOW_EXAMPLES, derandomize=False, **HYPOTHESIS)  # type: ignore[arg-type]
@given(values=st.lists(messages(), min_size=1, max_size=6))
def test_random_and_mutated_messages_never_crash_and_are_never_lost_long_run(
    security_pipeline: Pipeline, stats: Counter[str], values: list[bytes]
) -> None:
    check_batch(security_pipeline, values)
