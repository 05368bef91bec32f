"""The matcher: exact before perceptual, reloads only on a version change, survives Redis outages, screens
dead-letter records, and turns matches into a valid, deterministic verdict."""

from __future__ import annotations

import base64
import hashlib
import io
import json

import pytest
import redis
from PIL import Image
from prometheus_client import CollectorRegistry

from moderation.contracts import SchemaName, validate
from moderation.decide.policy import CategoryDecision, Decision, Reason
from moderation.decode.images import sniff_content_type
from moderation.decode.post import content_hash
from moderation.hashlists.enrol import entries_for_image
from moderation.hashlists.entries import HashEntry, HashKind
from moderation.hashlists.matcher import HashMatcher, embedded_media
from moderation.hashlists.store import Snapshot
from moderation.hashlists.verdict import WITHHELD_REASON, PostMatch
from moderation.observability.metrics import Metrics
from moderation.publish.messages import decision_fields
from moderation.types import Action, DecodedPost, ImageInput, RawRecord, ReasonCode, Rejection
from tests.unit.hashlists.conftest import LIMITS, reposted, sklearn_photos


class FakeStore:
    """In-memory stand-in for HashListStore: counts GETs and full loads, can fail like Redis."""

    def __init__(self) -> None:
        self.entries: list[HashEntry] = []
        self.current = 0
        self.gets = 0
        self.loads = 0
        self.down = False

    def set(self, entries: list[HashEntry]) -> None:
        self.entries = list(entries)
        self.current += 1

    def version(self) -> int:
        self.gets += 1
        if self.down:
            raise redis.ConnectionError("connection refused")
        return self.current

    def snapshot(self) -> Snapshot:
        self.loads += 1
        if self.down:
            raise redis.ConnectionError("connection refused")
        return Snapshot.of(self.current, self.entries)


def record(value: bytes = b"{}") -> RawRecord:
    return RawRecord("posts", 0, 1, b"k", value, 0)


def post(*images: bytes, text: str | None = None) -> DecodedPost:
    inputs = tuple(
        ImageInput(data, sniff_content_type(data) or "image/png", hashlib.sha256(data).hexdigest()) for data in images
    )
    return DecodedPost(record(), "p1", "t", "2026-01-01T00:00:00Z", text, inputs, content_hash(text, inputs))


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def photos() -> list[bytes]:
    return sklearn_photos()


def matcher_with(entries: list[HashEntry], metrics: Metrics) -> tuple[HashMatcher, FakeStore]:
    store = FakeStore()
    store.set(entries)
    matcher = HashMatcher(store, LIMITS, metrics, retry_after_s=0.0)  # type: ignore[arg-type]
    assert matcher.refresh()
    return matcher, store


def test_reload_only_when_the_version_changes_and_keep_the_last_index_through_outages(
    metrics: Metrics, photos: list[bytes]
) -> None:
    entries = entries_for_image(photos[0], "ncmec", "csam", "s", LIMITS)
    matcher, store = matcher_with(entries[:1], metrics)
    assert store.loads == 1
    assert not matcher.refresh() and not matcher.refresh()
    assert store.loads == 1 and store.gets == 3  # one GET per batch, no reload
    store.set(entries)
    assert matcher.refresh() and store.loads == 2
    assert matcher.index.counts == {HashKind.SHA256: 1, HashKind.PDQ: 3}
    store.down = True
    assert not matcher.refresh()
    assert matcher.index.size == 4  # still matching with the last lists
    assert metrics.cache_errors.labels(kind="hashlist")._value.get() == 1
    store.down = False
    store.set([])
    assert matcher.refresh() and matcher.index.size == 0


def test_slow_reloads_run_in_the_background_while_the_old_index_keeps_matching(
    metrics: Metrics, photos: list[bytes]
) -> None:
    entries = entries_for_image(photos[0], "ncmec", "csam", "s", LIMITS)
    store = FakeStore()
    store.set(entries[:1])
    matcher = HashMatcher(store, LIMITS, metrics, sync_reload_max_s=-1.0)  # type: ignore[arg-type]
    assert matcher.refresh() and matcher.index.size == 1  # the first load is always synchronous
    store.set(entries)
    assert not matcher.refresh()  # started in the background ...
    assert matcher.index.size == 1  # ... the batch at hand matches against the old index
    matcher.wait_for_reload()
    assert matcher.refresh() and matcher.index.size == 4 and store.loads == 2
    assert not matcher.refresh() and store.loads == 2


def test_without_redis_nothing_matches(metrics: Metrics, photos: list[bytes]) -> None:
    matcher = HashMatcher(None, LIMITS, metrics)
    assert not matcher.refresh()
    assert matcher.match(post(photos[0])) is None


def test_exact_first_then_perceptual_per_list(metrics: Metrics, photos: list[bytes]) -> None:
    listed = entries_for_image(photos[0], "ncmec", "csam", "s", LIMITS)
    other_list = [e.with_list("internal") for e in listed if e.kind is HashKind.PDQ]
    matcher, _ = matcher_with(listed + other_list, metrics)
    exact = matcher.match(post(photos[1], photos[0]))
    assert exact is not None
    assert [(m.image_index, m.list, m.kind, m.distance) for m in exact.matches] == [(1, "ncmec", HashKind.SHA256, 0)]
    assert exact.remaining == (0,)
    near = matcher.match(post(reposted(photos[0])))
    assert near is not None
    assert [(m.list, m.kind) for m in near.matches] == [("internal", HashKind.PDQ), ("ncmec", HashKind.PDQ)]
    assert all(0 < m.distance <= 31 for m in near.matches)
    assert matcher.match(post(photos[1])) is None
    assert metrics.hash_matches.labels(list="ncmec", kind="sha256")._value.get() == 1
    assert metrics.hash_matches.labels(list="ncmec", kind="pdq")._value.get() == 1


def test_low_quality_and_undecodable_images_are_not_matched_perceptually(metrics: Metrics, photos: list[bytes]) -> None:
    flat = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 200, 200)).save(flat, "PNG")
    flat_pdq = entries_for_image(flat.getvalue(), "l", "csam", "", LIMITS, min_quality=0)[1]
    matcher, _ = matcher_with([flat_pdq, *entries_for_image(photos[0], "l", "csam", "", LIMITS)[1:]], metrics)
    other_flat = io.BytesIO()
    Image.new("RGB", (80, 80), (201, 200, 200)).save(other_flat, "PNG")
    assert matcher.match(post(other_flat.getvalue())) is None  # quality 0: never a perceptual match
    assert matcher.match(post(b"\x89PNG\r\n\x1a\nbroken")) is None  # left for the encoders to reject


def test_a_match_blocks_with_a_valid_deterministic_verdict(metrics: Metrics, photos: list[bytes]) -> None:
    matcher, _ = matcher_with(entries_for_image(photos[0], "ncmec", "csam", "s", LIMITS), metrics)
    the_post = post(photos[1], reposted(photos[0]), text="hello")
    match = matcher.match(the_post)
    assert match is not None and match.remaining == (0,)
    assert match.model_post(the_post).images == the_post.images[:1]
    model_decision = Decision(
        Action.REVIEW,
        {
            "spam": CategoryDecision(0.8, Action.REVIEW, "enforce", None),
            "csam": CategoryDecision(0.1, Action.ALLOW, "observe", Action.ALLOW),
        },
        (Reason("score_at_or_above_review_threshold", "spam", 0.8, 0.7, "spam.review"),),
    )
    decision, driven = match.apply(model_decision, {"spam": ("both", 0), "csam": ("image", 0)})
    assert decision.action is Action.BLOCK
    assert decision.categories["csam"] == CategoryDecision(1.0, Action.BLOCK, "enforce", None)
    assert decision.categories["spam"] == model_decision.categories["spam"]
    assert driven == {"spam": ("both", 0), "csam": ("image", 1)}
    (distance,) = [m.distance for m in match.matches]
    assert [r.as_json() for r in decision.reasons] == [
        {
            "code": "known_bad_media_match",
            "category": "csam",
            "score": 1.0,
            "threshold": 1 - distance / 256,
            "rule": f"hashlist:ncmec:pdq:distance={distance}",
        },
        model_decision.reasons[0].as_json(),
    ]
    fields = decision_fields(the_post, decision, driven, "m1", "p1")
    validate(SchemaName.VERDICT, {**json.loads(fields), "published_at": "2026-01-01T00:00:00Z"})
    again = matcher.match(the_post)
    assert again == match and again is not None
    assert fields == decision_fields(the_post, *again.apply(model_decision, {"spam": ("both", 0)}), "m1", "p1")
    assert match.cache_key("k") == again.cache_key("k") != "k"


def test_identity_changes_with_the_entry_that_matched() -> None:
    from moderation.hashlists.verdict import ImageMatch

    a = PostMatch((ImageMatch(0, "l", "csam", HashKind.PDQ, 10, "00" * 32),), 1)
    b = PostMatch((ImageMatch(0, "l", "csam", HashKind.PDQ, 10, "01" * 32),), 1)
    assert a.cache_key("k") != b.cache_key("k")


def test_dead_letter_screening_withholds_known_bad_media_wherever_it_sits(
    metrics: Metrics, photos: list[bytes]
) -> None:
    matcher, _ = matcher_with(entries_for_image(photos[0], "ncmec", "csam", "s", LIMITS), metrics)
    inline = base64.b64encode(reposted(photos[0])).decode()
    malformed = json.dumps({"schema_version": "post.v1", "images": [{"inline": {"data": inline}}] * 20}).encode()

    def rejected(r: RawRecord) -> Rejection:
        return Rejection(r, ReasonCode.TOO_MANY_IMAGES, "too many")

    assert matcher.withhold_reason(record(malformed), rejected) == WITHHELD_REASON
    assert matcher.withhold_reason(record(photos[0]), rejected) == WITHHELD_REASON  # raw media as a message
    clean = json.dumps({"images": [{"inline": {"data": base64.b64encode(photos[1]).decode()}}]}).encode()
    assert matcher.withhold_reason(record(clean), rejected) is None
    the_post = post(photos[1], photos[0])
    assert matcher.withhold_reason(record(), lambda r: the_post) == WITHHELD_REASON

    def broken(r: RawRecord) -> DecodedPost:
        raise RuntimeError("boom")

    assert matcher.withhold_reason(record(), broken) == "known_bad_screening_failed"
    tiny = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiny, "PNG")
    many = json.dumps({"images": [base64.b64encode(tiny.getvalue()).decode()] * 65}).encode()  # too many to hash
    assert matcher.withhold_reason(record(many), rejected) == "known_bad_screening_failed"
    assert metrics.hash_matches.labels(list="ncmec", kind="sha256")._value.get() == 0  # screening is not counted
    assert HashMatcher(None, LIMITS, metrics).withhold_reason(record(malformed), rejected) is None


def test_embedded_media_walks_any_json_shape() -> None:
    data = base64.b64encode(b"x" * 30).decode()
    found = embedded_media(json.dumps({"a": [{"b": data}], "c": "short"}).encode())
    assert b"x" * 30 in found and len(found) == 2
    assert embedded_media(b"\xff\xfe") == [b"\xff\xfe"]
