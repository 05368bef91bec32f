"""The limit: the encoders alone on ready tensors, at the worker's batch sizes, combined for the post mix.

The inputs are grouped exactly as the worker groups them on a backlog: posts in batches of
``MODERATION_BATCH_MAX_SIZE``; within a batch the texts are normalised, sorted by length and cut into
``MODERATION_TEXT_BATCH_SIZE`` forward passes (as ``encode`` does), the images into
``MODERATION_IMAGE_BATCH_SIZE`` passes. Text rate: the text model's forward pass on the already tokenised
batches. Image rate: ``encode`` on already preprocessed tensors. Combined for a mix with a share ``t`` of posts
with text and ``i`` images per post, one post costs ``t / text_rate + i / image_rate`` seconds of model time, so
the limit is ``1 / (t / text_rate + i / image_rate)`` posts/s. The image decode rate (bytes to model input, one
thread, one call per worker batch, as the worker does it) is measured beside it and is not part of the limit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from moderation.bench.posts import image_count, text_count
from moderation.settings import Settings


def mix_rate(text_share: float, images_per_post: float, text_rate: float, image_rate: float) -> float:
    """Posts/s when every post costs ``text_share / text_rate + images_per_post / image_rate`` seconds."""
    cost = 0.0
    if text_share:
        cost += text_share / text_rate
    if images_per_post:
        cost += images_per_post / image_rate
    if cost <= 0:
        raise ValueError("a mix with neither text nor images has no model limit")
    return 1.0 / cost


@dataclass(frozen=True)
class LimitRuns:
    """Per-run rates (items/s) of the bare models and of image decoding, and what they ran on."""

    text_per_s: list[float]
    image_per_s: list[float]
    decode_per_s: list[float]
    text_encoder: str
    image_encoder: str
    device: str
    torch_threads: int
    text_batch_size: int
    image_batch_size: int
    texts: int
    images: int
    peak_gpu_bytes: int | None

    def joined(self, later: LimitRuns) -> LimitRuns:
        """These runs and a later measurement's runs of the same inputs, as one set."""
        return replace(
            self,
            text_per_s=self.text_per_s + later.text_per_s,
            image_per_s=self.image_per_s + later.image_per_s,
            decode_per_s=self.decode_per_s + later.decode_per_s,
            peak_gpu_bytes=max(self.peak_gpu_bytes or 0, later.peak_gpu_bytes or 0) or None,
        )

    def mix_per_s(self, text_share: float, images_per_post: float) -> list[float]:
        """The mix's limit (posts/s) for each run, pairing that run's text and image rates."""
        return [
            mix_rate(text_share, images_per_post, text, image)
            for text, image in zip(self.text_per_s, self.image_per_s, strict=True)
        ]


def worker_windows(kinds: Sequence[str], batch_max_size: int) -> tuple[list[int], list[int]]:
    """Texts and images in each worker batch of ``batch_max_size`` posts (in post order): how the worker groups
    the encoders' inputs on a backlog."""
    texts, images = [], []
    for start in range(0, len(kinds), batch_max_size):
        window = kinds[start : start + batch_max_size]
        texts.append(text_count(window))
        images.append(image_count(window))
    return texts, images


def _split(items: Sequence[Any], counts: Sequence[int]) -> list[Sequence[Any]]:
    out, start = [], 0
    for count in counts:
        out.append(items[start : start + count])
        start += count
    return out


def measure_limit(
    settings: Settings,
    texts: Sequence[str],
    images: Sequence[bytes],
    runs: int,
    text_windows: Sequence[int] | None = None,
    image_windows: Sequence[int] | None = None,
) -> LimitRuns:
    """Load the encoders the fusion model names (as the worker does) and time them ``runs`` times.

    The inputs are grouped as the worker groups them (``text_windows`` / ``image_windows``: items per worker
    batch, see :func:`worker_windows`; default one group): each group's texts are sorted by length and cut into
    ``MODERATION_TEXT_BATCH_SIZE`` forward passes as ``encode`` does, each group's images into
    ``MODERATION_IMAGE_BATCH_SIZE`` passes. Runs in its own process (see
    :func:`moderation.bench.processes.in_subprocess`). One untimed pass first pays the one-off costs (allocator
    growth, kernel selection, lazy initialisation).
    """
    import torch

    from moderation.allocator import configure_allocator
    from moderation.decode.images import ImageLimits
    from moderation.encode import create_settings_encoders
    from moderation.fuse import load_fusion_model

    configure_allocator(settings.host_allocator)  # as the worker does
    model = load_fusion_model(settings.model_dir)
    device = settings.resolved_device
    text, image = create_settings_encoders(settings, model.text_encoder, model.image_encoder)
    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def timed(run: Any, count: int) -> float:
        start = time.perf_counter()
        run()
        sync()
        return count / (time.perf_counter() - start)

    limits = ImageLimits.from_settings(settings)
    text_groups = _split(texts, text_windows or [len(texts)])
    prepared_texts = [text.prepare(group) for group in text_groups]  # normalised and tokenised, as the worker does

    def text_pass() -> None:
        for prepared in prepared_texts:
            text.encode_prepared(prepared)

    text_pass()
    text_rates = [timed(text_pass, len(texts)) for _ in range(runs)]

    windows = image_windows or [len(images)]
    tensors = [image.preprocess(data, limits) for data in images]
    image_groups = _split(tensors, windows)

    def image_pass() -> None:
        for group in image_groups:
            if len(group):
                image.encode(group)

    image_pass()
    image_rates = [timed(image_pass, len(images)) for _ in range(runs)]

    byte_groups = _split([(data, None) for data in images], windows)

    def decode_pass() -> None:  # as the worker decodes: one call per batch
        for group in byte_groups:
            image.preprocess_many(group, limits)

    decode_pass()
    decode_rates = [timed(decode_pass, len(images)) for _ in range(runs)]
    return LimitRuns(
        text_per_s=text_rates,
        image_per_s=image_rates,
        decode_per_s=decode_rates,
        text_encoder=text.version,
        image_encoder=image.version,
        device=device,
        torch_threads=torch.get_num_threads(),
        text_batch_size=settings.resolved_text_batch_size,
        image_batch_size=settings.resolved_image_batch_size,
        texts=len(texts),
        images=len(images),
        peak_gpu_bytes=int(torch.cuda.max_memory_allocated()) if cuda else None,
    )
