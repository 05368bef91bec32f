"""Throughput of encoders on this machine: items per second per batch size, with and without decoding.

Inputs are made here (deterministic texts of 5 to 60 words, a photo-like 1280x960 JPEG) unless real images are
given, so the numbers need no data set and are comparable between machines.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import TypeVar

from PIL import Image, ImageDraw, ImageFilter

from moderation.decode.images import ImageLimits
from moderation.encode.base import ImageEncoder, TextEncoder
from moderation.types import Modality

T = TypeVar("T")

_WORDS = (
    "the", "a", "post", "about", "this", "that", "stream", "image", "video", "free", "money", "click", "here",
    "you", "are", "so", "great", "terrible", "people", "never", "always", "buy", "now", "limited", "offer",
    "moderation", "report", "user", "comment", "reply", "thanks", "love", "hate", "win", "prize", "weekend",
    "game", "match", "team", "city", "news", "today", "tomorrow", "photo", "share", "follow", "like",
    "subscribe",
)  # fmt: skip


@dataclass(frozen=True)
class BenchRow:
    """One measurement: items/s of the model alone (None for text), of decode alone, and of both."""

    encoder: str
    device: str
    batch_size: int
    model_per_s: float | None
    decode_per_s: float | None
    end_to_end_per_s: float


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` texts of 5 to 60 words, the same for a given seed."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 60))) for _ in range(n)]


def synthetic_jpeg(width: int = 1280, height: int = 960, seed: int = 0) -> bytes:
    """A photo-like JPEG (gradients, shapes, sensor-like noise, quality 90): decode cost like a real photo."""
    rng = random.Random(seed)
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(20, max(21, width // 4))
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(2))
    noise = Image.frombytes("L", (width, height), rng.randbytes(width * height)).convert("RGB")
    image = Image.blend(image, noise, 0.1)
    out = BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def bench_text(encoder: TextEncoder, batch_sizes: Sequence[int], n: int, repeat: int = 1) -> list[BenchRow]:
    """Texts per second of ``encode`` (normalisation and tokenisation included) at each batch size."""
    texts = synthetic_texts(n)
    device = str(encoder.device)
    return [
        BenchRow(encoder.name, device, size, None, None, _throughput(texts, size, encoder.encode, repeat))
        for size in batch_sizes
    ]


def bench_image(
    encoder: ImageEncoder,
    batch_sizes: Sequence[int],
    n: int,
    images: Sequence[bytes],
    limits: ImageLimits,
    repeat: int = 1,
) -> list[BenchRow]:
    """Images per second of ``encode`` on preprocessed tensors, of ``preprocess`` alone, and of ``encode_bytes``."""
    data = [images[i % len(images)] for i in range(n)]
    decode_per_s = _throughput(
        data, max(batch_sizes), lambda chunk: encoder.preprocess_many([(item, None) for item in chunk], limits), repeat
    )
    tensors = [encoder.preprocess(item, limits) for item in data]
    rows = []
    for size in batch_sizes:
        model_per_s = _throughput(tensors, size, encoder.encode, repeat)
        end_to_end = _throughput(data, size, lambda chunk: encoder.encode_bytes(chunk, limits), repeat)
        rows.append(BenchRow(encoder.name, str(encoder.device), size, model_per_s, decode_per_s, end_to_end))
    return rows


def bench(
    encoders: Sequence[TextEncoder | ImageEncoder],
    batch_sizes: Sequence[int],
    n: int,
    images: Sequence[bytes],
    limits: ImageLimits,
    repeat: int = 1,
) -> list[BenchRow]:
    """Rows for every encoder and batch size; each number is the best of ``repeat`` passes."""
    rows: list[BenchRow] = []
    for encoder in encoders:
        if encoder.modality is Modality.TEXT:
            rows += bench_text(encoder, batch_sizes, n, repeat)  # type: ignore[arg-type]
        else:
            rows += bench_image(encoder, batch_sizes, n, images, limits, repeat)  # type: ignore[arg-type]
    return rows


def format_table(rows: Sequence[BenchRow]) -> str:
    """A Markdown table of ``rows``; ``-`` where a column does not apply (text has no separate decode)."""
    header = "| encoder | device | batch | model only items/s | decode only items/s | decode + model items/s |"
    lines = [header, "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row.encoder} | {row.device} | {row.batch_size} | {_number(row.model_per_s)} "
            f"| {_number(row.decode_per_s)} | {_number(row.end_to_end_per_s)} |"
        )
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _throughput(items: Sequence[T], size: int, run: Callable[[Sequence[T]], object], repeat: int) -> float:
    """Items per second of ``run`` over ``items`` in chunks of ``size``: the best of ``repeat`` passes.

    One untimed chunk first pays the one-off costs (allocator growth, kernel selection, lazy initialisation);
    the best pass is the one least disturbed by other work on the machine.
    """
    run(items[:size])
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for offset in range(0, len(items), size):
            run(items[offset : offset + size])
        best = min(best, time.perf_counter() - start)
    return len(items) / best
