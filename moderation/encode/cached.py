"""Encoders behind the content-hash cache: a repeated text or image is never encoded twice.

Keys are the SHA-256 of the raw text or of the image bytes, scoped by the encoder's version; values are the
float32 rows. Only the misses go to the encoder, in one batched call per modality.

Encoding is two steps so that a worker can overlap them across batches: :meth:`CachedEncoders.prepare` does what
needs no model (the cache lookups; tokenising the texts and decoding the images that missed),
:meth:`CachedEncoders.encode` runs the forward passes and stores the new rows.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from moderation.decode.images import ImageLimits
from moderation.encode.base import ImageEncoder, PreparedTexts, TextEncoder
from moderation.errors import DecodeError
from moderation.observability.metrics import Metrics
from moderation.state.cache import Cache, embedding_key
from moderation.types import ImageInput, Modality


@dataclass
class Lookup:
    """One modality's cache lookup for a batch: the rows found, and which items are still to compute."""

    modality: Modality
    rows: torch.Tensor
    keys: list[str]
    missing: list[int]  # every item without a cached row
    first_of: dict[str, int]  # key -> the first missing item with it: the ones to compute

    @property
    def unique(self) -> list[int]:
        return list(self.first_of.values())


@dataclass
class PreparedInputs:
    """A batch's encoder inputs after :meth:`CachedEncoders.prepare`: both lookups, the texts to encode tokenised,
    and the images to encode decoded to model input (on the device where JPEGs decode there)."""

    text: Lookup
    image: Lookup
    texts: PreparedTexts
    image_tensors: list[torch.Tensor] = field(default_factory=list)
    decoded: list[int] = field(default_factory=list)  # the unique missing images that decoded, in tensor order
    image_failures: dict[int, DecodeError] = field(default_factory=dict)  # the unique missing ones that did not


class CachedEncoders:
    """Text and image encoding with a shared cache; image decode failures are returned, not raised."""

    def __init__(self, text: TextEncoder, image: ImageEncoder, cache: Cache, metrics: Metrics) -> None:
        self.text = text
        self.image = image
        self.cache = cache
        self.metrics = metrics

    def prepare(self, texts: Sequence[str], images: Sequence[ImageInput], limits: ImageLimits) -> PreparedInputs:
        """Look both modalities up in the cache, tokenise the texts and decode the images that missed (no forward
        pass)."""
        text = self._lookup(Modality.TEXT, self.text.version, self.text.dim, [_sha256(t) for t in texts])
        image = self._lookup(Modality.IMAGE, self.image.version, self.image.dim, [i.sha256 for i in images])
        prepared = PreparedInputs(text, image, self.text.prepare([texts[i] for i in text.unique]))
        unique = image.unique
        if unique:
            started = time.perf_counter()
            items = self.image.preprocess_many([(images[i].data, images[i].declared_type) for i in unique], limits)
            self.metrics.stage_seconds.labels(stage="preprocess_image").observe(time.perf_counter() - started)
            for index, item in zip(unique, items, strict=True):
                if isinstance(item, DecodeError):
                    prepared.image_failures[index] = item
                else:
                    prepared.image_tensors.append(item)
                    prepared.decoded.append(index)
        return prepared

    def encode(self, prepared: PreparedInputs) -> tuple[torch.Tensor, torch.Tensor, dict[int, DecodeError]]:
        """Text rows and image rows, in input order, and the images that could not be decoded (their rows are
        NaN)."""
        text, image = prepared.text, prepared.image
        if text.first_of:
            started = time.perf_counter()
            self._fill(text, self.text.encode_prepared(prepared.texts), {}, started)
        if image.first_of:
            started = time.perf_counter()
            rows = torch.full((len(image.first_of), self.image.dim), float("nan"))
            if prepared.image_tensors:
                position = {index: row for row, index in enumerate(image.unique)}
                rows[[position[i] for i in prepared.decoded]] = self.image.encode(prepared.image_tensors)
            self._fill(image, rows, prepared.image_failures, started)
        return text.rows, image.rows, _spread(image, prepared.image_failures)

    def _lookup(self, modality: Modality, version: str, dim: int, hashes: Sequence[str]) -> Lookup:
        rows = torch.empty((len(hashes), dim), dtype=torch.float32)
        keys = [embedding_key(version, h) for h in hashes]
        lookup = Lookup(modality, rows, keys, [], {})
        if not hashes:
            return lookup
        for index, value in enumerate(self.cache.get_many(f"{modality.value}_embedding", keys)):
            if value is not None and len(value) == dim * 4:
                rows[index] = torch.from_numpy(np.frombuffer(value, dtype=np.float32).copy())
            else:
                lookup.missing.append(index)
                lookup.first_of.setdefault(keys[index], index)
        return lookup

    def _fill(self, lookup: Lookup, computed: torch.Tensor, failed: dict[int, DecodeError], started: float) -> None:
        """Put the computed rows (one per unique missing item) in place, copy them to repeats, and cache them."""
        elapsed = time.perf_counter() - started
        self.metrics.stage_seconds.labels(stage=f"encode_{lookup.modality.value}").observe(elapsed)
        unique = lookup.unique
        self.metrics.batch_size.labels(encoder=lookup.modality.value).observe(len(unique))
        lookup.rows[unique] = computed
        if len(lookup.missing) > len(unique):  # an item repeated within the batch: one gather for all repeats
            lookup.rows[lookup.missing] = lookup.rows[[lookup.first_of[lookup.keys[i]] for i in lookup.missing]]
        self.metrics.encoded_items.labels(modality=lookup.modality.value).inc(len(unique) - len(failed))
        table = lookup.rows.numpy()  # float32, shares the tensor's memory: one view, not a copy per row
        self.cache.put_many(
            f"{lookup.modality.value}_embedding",
            [(lookup.keys[i], table[i].tobytes()) for i in unique if i not in failed],
        )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _spread(lookup: Lookup, failed: dict[int, DecodeError]) -> dict[int, DecodeError]:
    """The failures of the computed items, for every item that repeats one."""
    return {
        index: failed[first] for index in lookup.missing if (first := lookup.first_of[lookup.keys[index]]) in failed
    }
