"""Wiring only: one batch of raw records through decode, encode, fuse, decide, and into outgoing messages.

Each stage lives in its own module; this one connects them and keeps the bookkeeping that spans stages (which
posts were replays, which became dead letters at which stage, and the timings stamped into verdicts).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import torch

from moderation.decide.policy import Policy, PolicySource
from moderation.decode.images import ImageLimits
from moderation.decode.post import PostDecoder
from moderation.decode.stores import StoreRegistry
from moderation.encode import create_settings_encoders
from moderation.encode.cached import CachedEncoders, PreparedInputs
from moderation.fuse import FusionInput, FusionModel, load_fusion_model
from moderation.hashlists.matcher import HashMatcher
from moderation.hashlists.verdict import PostMatch
from moderation.ingest.stream import Outgoing
from moderation.observability.metrics import Metrics
from moderation.publish.messages import dead_letter_message, decision_fields, verdict_message
from moderation.settings import Settings
from moderation.state.cache import Cache, review_sent_key, verdict_key
from moderation.types import Action, DecodedPost, RawRecord, Rejection

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """What one batch produced: messages to publish, and what to record once the broker acknowledged them."""

    messages: list[Outgoing] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    review_sent_keys: list[str] = field(default_factory=list)
    created_at: list[str] = field(default_factory=list)


@dataclass(eq=False)  # holds tensors: compared by identity
class PreparedBatch:
    """A batch after :meth:`Pipeline.prepare`, waiting for :meth:`Pipeline.complete`."""

    started: float
    policy: Policy  # the policy in force when the batch was consumed, for all of its posts
    result: BatchResult = field(default_factory=BatchResult)  # holds the rejections so far
    posts: list[DecodedPost] = field(default_factory=list)
    matches: list[PostMatch | None] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # verdict cache keys, one per post
    stored: list[bytes | None] = field(default_factory=list)  # verdicts already decided, one per post
    fresh: list[int] = field(default_factory=list)  # the posts to decide now
    with_text: list[int] = field(default_factory=list)  # which fresh posts have text (index among the fresh)
    image_owners: list[int] = field(default_factory=list)  # the fresh post of each image to encode
    inputs: PreparedInputs | None = None  # the fresh posts' encoder inputs
    prepare_s: float = 0.0


class Pipeline:
    """Processes batches of records in two steps, :meth:`prepare` (no model) and :meth:`complete`; one caller of
    each at a time, which may be two threads working on consecutive batches."""

    def __init__(
        self,
        settings: Settings,
        decoder: PostDecoder,
        encoders: CachedEncoders,
        model: FusionModel,
        policies: PolicySource,
        cache: Cache,
        metrics: Metrics,
        hashes: HashMatcher | None = None,
    ) -> None:
        self.settings = settings
        self.decoder = decoder
        self.encoders = encoders
        self.model = model
        self.policies = policies
        self.cache = cache
        self.metrics = metrics
        self.limits = ImageLimits.from_settings(settings)
        self.hashes = hashes or HashMatcher(None, self.limits, metrics)

    def process(self, records: Sequence[RawRecord]) -> BatchResult:
        """A batch through both steps at once (the worker overlaps them across batches instead)."""
        return self.complete(self.prepare(records))

    def prepare(self, records: Sequence[RawRecord]) -> PreparedBatch:
        """The work that needs no model: decode and check the posts, match known-bad media, look up stored
        verdicts and cached encodings, and tokenise the texts and decode the images still to encode.

        It may run in another thread while :meth:`complete` finishes the previous batch: the two share only Redis,
        the metrics and the encoders (preprocessing here, forward passes there), all safe to use from two threads.
        """
        started = time.perf_counter()
        batch = PreparedBatch(started, self.policies.current())
        for record in records:
            outcome = self.decoder.decode(record)
            if isinstance(outcome, DecodedPost):
                batch.posts.append(outcome)
            else:
                batch.result.rejections.append(outcome)
        self.hashes.refresh()  # known-bad hash lists: one GET, a reload only when they changed
        batch.matches = self.hashes.match_many(batch.posts)
        keys = [
            verdict_key(p.tenant, p.post_id, p.content_hash, self.model.version, batch.policy.version)
            for p in batch.posts
        ]
        batch.keys = [key if m is None else m.cache_key(key) for key, m in zip(keys, batch.matches, strict=True)]
        batch.stored = self.cache.get_many("verdict", batch.keys)
        batch.fresh = [i for i, value in enumerate(batch.stored) if value is None]
        if batch.fresh:
            # matched images never reach the encoders
            inputs = [
                batch.posts[i] if (m := batch.matches[i]) is None else m.model_post(batch.posts[i]) for i in batch.fresh
            ]
            batch.with_text = [local for local, post in enumerate(inputs) if post.text]
            batch.image_owners = [local for local, post in enumerate(inputs) for _ in post.images]
            batch.inputs = self.encoders.prepare(
                [inputs[local].text or "" for local in batch.with_text],
                [image for post in inputs for image in post.images],
                self.limits,
            )
        batch.prepare_s = time.perf_counter() - started
        self.metrics.stage_seconds.labels(stage="prepare").observe(batch.prepare_s)
        return batch

    def complete(self, batch: PreparedBatch) -> BatchResult:
        """The model work and what follows it: encode, fuse, decide, claim the verdicts, build the messages."""
        completing = time.perf_counter()
        result = batch.result
        encoded = fused = completing
        if batch.inputs is not None:
            fusion_input, failed = self._encode(batch)
            encoded = time.perf_counter()
            fresh_posts = [batch.posts[i] for i in batch.fresh]
            for local, error in failed.items():
                post = fresh_posts[local]
                result.rejections.append(Rejection(post.record, error.reason, error.detail, post.post_id))
            keep = [local for local in range(len(fresh_posts)) if local not in failed]
            claims = []
            if keep:
                outputs = self.model.predict(fusion_input.select(torch.tensor(keep, dtype=torch.long)))
                for local, output in zip(keep, outputs, strict=True):
                    post = fresh_posts[local]
                    decision = batch.policy.decide(post.tenant, output.scores)
                    driven = {c: _driven(m, i) for c, (m, i) in output.driven_by.items()}
                    if (match := batch.matches[batch.fresh[local]]) is not None:
                        decision, driven = match.apply(decision, driven)
                    fields = decision_fields(post, decision, driven, self.model.version, batch.policy.version)
                    claims.append((batch.fresh[local], fields))
            fused = time.perf_counter()
            self.metrics.stage_seconds.labels(stage="fuse").observe(fused - encoded)
            claimed = self.cache.claim_verdicts([(batch.keys[i], v) for i, v in claims])
            for (index, _), value in zip(claims, claimed, strict=True):
                batch.stored[index] = value
        timings = {
            "decode_ms": batch.prepare_s * 1000,
            "encode_ms": (encoded - completing) * 1000,
            "fuse_ms": (fused - encoded) * 1000,
            "total_ms": (time.perf_counter() - batch.started) * 1000,
        }
        self._messages(batch.posts, batch.keys, batch.stored, timings, result)
        return result

    def _encode(self, batch: PreparedBatch) -> tuple[FusionInput, dict[int, Any]]:
        """Embeddings of the fresh posts' texts and images; posts with an undecodable image are returned as
        failed (by their index among the fresh posts)."""
        assert batch.inputs is not None
        count = len(batch.fresh)
        text_rows, image_rows, image_failures = self.encoders.encode(batch.inputs)
        text = torch.zeros((count, self.encoders.text.dim), dtype=torch.float32)
        text_present = torch.zeros(count, dtype=torch.bool)
        if batch.with_text:
            text[batch.with_text] = text_rows
            text_present[batch.with_text] = True
        failed: dict[int, Any] = {}
        for image_index, error in image_failures.items():
            failed.setdefault(batch.image_owners[image_index], error)
        fusion_input = FusionInput(
            text=text if batch.with_text else None,
            text_present=text_present,
            image_emb=image_rows,
            image_post_index=torch.tensor(batch.image_owners, dtype=torch.long),
        )
        return fusion_input, failed

    def _messages(
        self,
        posts: Sequence[DecodedPost],
        keys: Sequence[str],
        stored: Sequence[bytes | None],
        timings: dict[str, float],
        result: BatchResult,
    ) -> None:
        decided = [
            (post, key, verdict_message(value, timings))
            for post, key, value in zip(posts, keys, stored, strict=True)
            if value
        ]
        review_candidates = [
            (post, key, message) for post, key, (message, document) in decided if document["action"] == Action.REVIEW
        ]
        already_sent = self.cache.get_many("review", [review_sent_key(key) for _, key, _ in review_candidates])
        for post, _, (message, document) in decided:
            result.verdicts.append(document)
            result.created_at.append(post.created_at)
            result.messages.append(Outgoing(self.settings.topic_verdicts, post.post_id.encode(), message))
        for (post, key, message), sent in zip(review_candidates, already_sent, strict=True):
            if sent is None:  # the review copy is the verdict message itself
                result.messages.append(Outgoing(self.settings.topic_review, post.post_id.encode(), message))
                result.review_sent_keys.append(review_sent_key(key))
        result.messages.extend(self.dead_letter(rejection) for rejection in result.rejections)

    def dead_letter(self, rejection: Rejection) -> Outgoing:
        """The dead-letter record of a rejected message, keyed like the original; the original bytes are
        withheld when they carry known-bad media, or (``too_large``) when the record would be over
        ``MODERATION_MAX_MESSAGE_BYTES``, the bound kept below the broker's message limit."""
        withhold = self.hashes.withhold_reason(rejection.record, self.decoder.decode)
        message = dead_letter_message(rejection, withhold_original=withhold)
        if len(message) > self.settings.max_message_bytes:  # base64 grows it by 4/3: keep it under the broker's limit
            message = dead_letter_message(rejection, withhold_original="too_large")
        return Outgoing(self.settings.topic_dead_letter, rejection.record.key, message)

    def after_publish(self, result: BatchResult) -> None:
        """Once the broker acknowledged the batch: remember sent review copies, count what went out."""
        self.cache.put_many("review", [(key, b"1") for key in result.review_sent_keys])
        now = time.time()
        actions = Counter(verdict["action"] for verdict in result.verdicts)
        decisions = Counter(
            (category, entry["decision"], entry["mode"])
            for verdict in result.verdicts
            for category, entry in verdict["categories"].items()
        )  # counted first: one labelled increment per distinct value, not per post
        for action, count in actions.items():
            self.metrics.verdicts.labels(action=action).inc(count)
        for (category, decision, mode), count in decisions.items():
            self.metrics.category_decisions.labels(category=category, decision=decision, mode=mode).inc(count)
        for created_at in result.created_at:
            self.metrics.end_to_end_seconds.observe(max(0.0, now - _epoch(created_at)))
        self.metrics.review_published.inc(len(result.review_sent_keys))
        for rejection in result.rejections:
            self.metrics.dead_letters.labels(reason=rejection.reason.value).inc()


def _driven(modality: object, image_index: int | None) -> tuple[str, int | None]:
    """The fusion model's attribution as verdict fields: a modality name, ``both`` or ``none``."""
    name = "none" if modality is None else str(getattr(modality, "value", modality))
    return name, (image_index if name in ("image", "both") else None)


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def build_pipeline(settings: Settings, redis_url: str | None, metrics: Metrics) -> Pipeline:
    """Load the model, encoders, policy and stores that ``settings`` name, and connect them."""
    model = load_fusion_model(settings.model_dir)
    text, image = create_settings_encoders(settings, model.text_encoder, model.image_encoder)
    cache = Cache(redis_url, settings.cache_ttl_s, metrics)
    policy_path = settings.policy_file or settings.model_dir / "policy.yaml"
    policies = PolicySource(policy_path)
    policy_version = policies.current().version
    metrics.model_info.info(
        {"model_version": model.version, "policy_version": policy_version, "device": settings.resolved_device}
    )
    return Pipeline(
        settings=settings,
        decoder=PostDecoder(settings, StoreRegistry.from_folders(settings.stores)),
        encoders=CachedEncoders(text, image, cache, metrics),
        model=model,
        policies=policies,
        cache=cache,
        metrics=metrics,
        hashes=HashMatcher.from_settings(settings, redis_url, metrics),
    )
