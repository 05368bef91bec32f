"""Encoders behind the content-hash cache: a repeated text or image is never encoded twice.

Keys are the SHA-256 of the raw text or of the image bytes, scoped by the encoder's version; values are the
float32 rows. Only the misses go to the encoder, in one batched call per modality.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from moderation.decode.images import ImageLimits
from moderation.encode.base import ImageEncoder, TextEncoder
from moderation.errors import DecodeError
from moderation.observability.metrics import Metrics
from moderation.state.cache import Cache, embedding_key
from moderation.types import ImageInput, Modality


class CachedEncoders:
    """Text and image encoding with a shared cache; image decode failures are returned, not raised."""

    def __init__(self, text: TextEncoder, image: ImageEncoder, cache: Cache, metrics: Metrics) -> None:
        self.text = text
        self.image = image
        self.cache = cache
        self.metrics = metrics

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """One row per text, in order."""
        keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        rows, _ = self._through_cache(
            Modality.TEXT,
            self.text.version,
            self.text.dim,
            keys,
            lambda missing: (self.text.encode([texts[i] for i in missing]), {}),
        )
        return rows

    def encode_images(
        self, images: Sequence[ImageInput], limits: ImageLimits
    ) -> tuple[torch.Tensor, dict[int, DecodeError]]:
        """One row per image, in order, and the images that could not be decoded (their rows are NaN)."""

        def compute(missing: list[int]) -> tuple[torch.Tensor, dict[int, DecodeError]]:
            tensors: list[torch.Tensor] = []
            decoded: list[int] = []
            failures: dict[int, DecodeError] = {}
            prepared = self.image.preprocess_many(
                [(images[index].data, images[index].declared_type) for index in missing], limits
            )
            for index, item in zip(missing, prepared, strict=True):
                if isinstance(item, DecodeError):
                    failures[index] = item
                else:
                    tensors.append(item)
                    decoded.append(index)
            rows = torch.full((len(missing), self.image.dim), float("nan"))
            if tensors:
                encoded = self.image.encode(tensors)
                position = {index: row for row, index in enumerate(missing)}
                rows[[position[i] for i in decoded]] = encoded
            return rows, failures

        return self._through_cache(
            Modality.IMAGE, self.image.version, self.image.dim, [image.sha256 for image in images], compute
        )

    def _through_cache(
        self,
        modality: Modality,
        version: str,
        dim: int,
        hashes: Sequence[str],
        compute: Callable[[list[int]], tuple[torch.Tensor, dict[int, DecodeError]]],
    ) -> tuple[torch.Tensor, dict[int, DecodeError]]:
        rows = torch.empty((len(hashes), dim), dtype=torch.float32)
        if not hashes:
            return rows, {}
        keys = [embedding_key(version, h) for h in hashes]
        cached = self.cache.get_many(f"{modality.value}_embedding", keys)
        missing = []
        for index, value in enumerate(cached):
            if value is not None and len(value) == dim * 4:
                rows[index] = torch.from_numpy(np.frombuffer(value, dtype=np.float32).copy())
            else:
                missing.append(index)
        failures: dict[int, DecodeError] = {}
        if missing:
            first_of: dict[str, int] = {}
            for index in missing:
                first_of.setdefault(keys[index], index)
            unique = list(first_of.values())
            started = time.perf_counter()
            computed, failed = compute(unique)
            self.metrics.stage_seconds.labels(stage=f"encode_{modality.value}").observe(time.perf_counter() - started)
            self.metrics.batch_size.labels(encoder=modality.value).observe(len(unique))
            rows[unique] = computed
            for index in missing:
                first = first_of[keys[index]]
                rows[index] = rows[first]
                if first in failed:
                    failures[index] = failed[first]
            self.metrics.encoded_items.labels(modality=modality.value).inc(len(unique) - len(failed))
            self.cache.put_many(
                f"{modality.value}_embedding",
                [(keys[i], rows[i].numpy().astype(np.float32).tobytes()) for i in unique if i not in failed],
            )
        return rows, failures
