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

from moderation.decide.policy import PolicySource
from moderation.decode.images import ImageLimits
from moderation.decode.post import PostDecoder
from moderation.decode.stores import StoreRegistry
from moderation.encode import create_settings_encoders
from moderation.encode.cached import CachedEncoders
from moderation.fuse import FusionInput, FusionModel, load_fusion_model
from moderation.hashlists.matcher import HashMatcher
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


class Pipeline:
    """Processes batches of records; thread-safe for one caller at a time (the worker's model thread)."""

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
        started = time.perf_counter()
        result = BatchResult()
        posts: list[DecodedPost] = []
        for record in records:
            outcome = self.decoder.decode(record)
            (posts if isinstance(outcome, DecodedPost) else result.rejections).append(outcome)  # type: ignore[arg-type]
        self.hashes.refresh()  # known-bad hash lists: one GET, a reload only when they changed
        matches = self.hashes.match_many(posts)
        decoded = time.perf_counter()
        policy = self.policies.current()
        keys = [verdict_key(p.tenant, p.post_id, p.content_hash, self.model.version, policy.version) for p in posts]
        keys = [key if match is None else match.cache_key(key) for key, match in zip(keys, matches, strict=True)]
        stored = self.cache.get_many("verdict", keys)
        fresh = [i for i, value in enumerate(stored) if value is None]
        encoded = fused = decoded
        if fresh:
            fresh_posts = [posts[i] for i in fresh]
            fresh_matches = [matches[i] for i in fresh]
            # matched images never reach the encoders
            fusion_input, failed = self._encode(
                [p if m is None else m.model_post(p) for p, m in zip(fresh_posts, fresh_matches, strict=True)]
            )
            encoded = time.perf_counter()
            for local, error in failed.items():
                result.rejections.append(
                    Rejection(fresh_posts[local].record, error.reason, error.detail, fresh_posts[local].post_id)
                )
            keep = [local for local in range(len(fresh_posts)) if local not in failed]
            claims = []
            if keep:
                outputs = self.model.predict(fusion_input.select(torch.tensor(keep, dtype=torch.long)))
                for local, output in zip(keep, outputs, strict=True):
                    post = fresh_posts[local]
                    decision = policy.decide(post.tenant, output.scores)
                    driven = {c: _driven(m, i) for c, (m, i) in output.driven_by.items()}
                    if (match := fresh_matches[local]) is not None:
                        decision, driven = match.apply(decision, driven)
                    claims.append(
                        (fresh[local], decision_fields(post, decision, driven, self.model.version, policy.version))
                    )
            fused = time.perf_counter()
            for (index, _), value in zip(
                claims, self.cache.claim_verdicts([(keys[i], v) for i, v in claims]), strict=True
            ):
                stored[index] = value
        timings = {
            "decode_ms": (decoded - started) * 1000,
            "encode_ms": (encoded - decoded) * 1000,
            "fuse_ms": (fused - encoded) * 1000,
            "total_ms": (time.perf_counter() - started) * 1000,
        }
        self.metrics.stage_seconds.labels(stage="decode").observe(decoded - started)
        if fresh:
            self.metrics.stage_seconds.labels(stage="fuse").observe(fused - encoded)
        self._messages(posts, keys, stored, timings, result)
        return result

    def _encode(self, posts: Sequence[DecodedPost]) -> tuple[FusionInput, dict[int, Any]]:
        """Embeddings of the posts' texts and images; posts with an undecodable image are returned as failed."""
        with_text = [i for i, p in enumerate(posts) if p.text]
        text_rows = self.encoders.encode_texts([posts[i].text or "" for i in with_text])
        text = torch.zeros((len(posts), self.encoders.text.dim), dtype=torch.float32)
        text_present = torch.zeros(len(posts), dtype=torch.bool)
        if with_text:
            text[with_text] = text_rows
            text_present[with_text] = True
        images = [image for post in posts for image in post.images]
        owners = [i for i, post in enumerate(posts) for _ in post.images]
        image_rows, image_failures = self.encoders.encode_images(images, self.limits)
        failed: dict[int, Any] = {}
        for image_index, error in image_failures.items():
            failed.setdefault(owners[image_index], error)
        fusion_input = FusionInput(
            text=text if with_text else None,
            text_present=text_present,
            image_emb=image_rows,
            image_post_index=torch.tensor(owners, dtype=torch.long),
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
