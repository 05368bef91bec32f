"""The benchmark's posts: a fixed mix of unique posts, images inline or by store reference.

The mix is exact, not drawn: 40% text only, 20% image only, 40% text and one image (0.8 texts and 0.6 images per
post). Texts are real SMS messages (the SMS Spam Collection) with a unique token appended; images are the real
textile photos resized to 640x480, each with its own small perturbation (a brightness shift and a block of random
colour) and re-encoded as JPEG at quality 90, so every image of a run differs in its pixels.

A base set of JPEGs is made once per benchmark; each run then *tags* every text and image with the run's id: the
text gets the token, the JPEG a comment segment (``COM``), which every decoder skips. The bytes, and so every
SHA-256 the caches key on, are new for every run while the decode and model cost stay exactly the same, so no
run is helped by what an earlier run cached.

``created_at`` is left as a placeholder of fixed width; :func:`stamp` writes the real time at send time, so
end-to-end latency counts from when a post entered the broker.
"""

from __future__ import annotations

import base64
import io
import json
import random
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from PIL import Image

MIX: tuple[tuple[str, float], ...] = (("text", 0.4), ("image", 0.2), ("both", 0.4))
WIDTH, HEIGHT = 640, 480
JPEG_QUALITY = 90
TENANT = "bench"
STORE = "bench"
PLACEHOLDER = "1970-01-01T00:00:00.000Z"  # as wide as every stamp: 2026-05-01T12:00:00.123Z
_PLACEHOLDER_BYTES = f'"created_at":"{PLACEHOLDER}"'.encode()
_PARALLEL_FROM = 256  # base images: one process per core from this many on

Shape = Literal["inline", "ref"]


def mix_shapes(count: int, seed: int = 0, mix: Sequence[tuple[str, float]] = MIX) -> list[str]:
    """``count`` post kinds in exactly the mix's proportions (largest remainder), shuffled with ``seed``."""
    exact = [(name, share * count) for name, share in mix]
    counts = {name: int(value) for name, value in exact}
    by_remainder = sorted(exact, key=lambda item: item[1] - int(item[1]), reverse=True)
    for name, _ in by_remainder[: count - sum(counts.values())]:
        counts[name] += 1
    kinds = [name for name, _ in mix for _ in range(counts[name])]
    random.Random(seed).shuffle(kinds)
    return kinds


def text_count(kinds: Sequence[str]) -> int:
    """Posts that carry text."""
    return sum(kind in ("text", "both") for kind in kinds)


def text_share(kinds: Sequence[str]) -> float:
    """Share of posts that carry text."""
    return text_count(kinds) / max(1, len(kinds))


def image_count(kinds: Sequence[str]) -> int:
    """Images the posts carry (each image-carrying post of the mix has one)."""
    return sum(kind in ("image", "both") for kind in kinds)


def images_per_post(kinds: Sequence[str]) -> float:
    """Images per post."""
    return image_count(kinds) / max(1, len(kinds))


@dataclass(frozen=True)
class Sources:
    """What posts are made from: texts, and photos as encoded bytes."""

    texts: list[str]
    photos: list[bytes] = field(repr=False)


def default_sources(photo_limit: int = 500) -> Sources:
    """The SMS Spam Collection and (up to ``photo_limit``) textile photos, from the installed data packages."""
    from moderation.fuse.datasets import sms_collection, textile_photos, textile_root

    root = textile_root()
    photos = [(root / photo.key).read_bytes() for photo in textile_photos()[:photo_limit]]
    return Sources(texts=[sms.text for sms in sms_collection()], photos=photos)


def folder_sources(folder: Path) -> Sources:
    """Sources packed into a folder (``texts.txt``, one text a line, and ``photos/*.jpg``), for machines without
    the data packages (see ``bench/pack.sh``)."""
    texts = [line for line in (folder / "texts.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    photos = [path.read_bytes() for path in sorted((folder / "photos").glob("*.jpg"))]
    if not texts or not photos:
        raise FileNotFoundError(f"{folder} needs texts.txt and photos/*.jpg (bench/pack.sh writes them)")
    return Sources(texts=texts, photos=photos)


def perturbed_jpeg(photo: bytes, seed: int) -> bytes:
    """``photo`` at 640x480 with a brightness shift and a random colour block of its own, JPEG quality 90."""
    rng = random.Random(seed)
    image = Image.open(io.BytesIO(photo)).convert("RGB").resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)
    shift = rng.randint(-12, 12)
    image = image.point(lambda value: min(255, max(0, value + shift)))
    size = rng.randint(12, 40)
    block = Image.new("RGB", (size, size), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    image.paste(block, (rng.randrange(WIDTH - size), rng.randrange(HEIGHT - size)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _perturb(job: tuple[bytes, int]) -> bytes:
    return perturbed_jpeg(*job)


def base_jpegs(
    photos: Sequence[bytes], count: int, seed: int = 0, workers: int | None = None, first: int = 0
) -> list[bytes]:
    """``count`` distinct 640x480 JPEGs from ``photos`` (cycled), made in parallel when there are many; ``first``
    continues an earlier call's sequence, so images made later differ from those made before."""
    if not photos:
        raise ValueError("no photos to make benchmark images from")
    jobs = [(photos[i % len(photos)], seed * 1_000_003 + i) for i in range(first, first + count)]
    if count < _PARALLEL_FROM or workers == 1:
        return [_perturb(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_perturb, jobs, chunksize=16))


def tagged_jpeg(data: bytes, tag: str) -> bytes:
    """``data`` with a JPEG comment segment holding ``tag`` right after the start marker: new bytes (and
    SHA-256), the same pixels and decode cost."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG (no SOI marker)")
    payload = tag.encode()
    if len(payload) > 65_000:
        raise ValueError("tag too long for a JPEG comment segment")
    return b"\xff\xd8\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]


def stamp(value: bytes, created_at: str) -> bytes:
    """The message with its ``created_at`` placeholder replaced by ``created_at`` (same width)."""
    return value.replace(_PLACEHOLDER_BYTES, f'"created_at":"{created_at}"'.encode(), 1)


def utc_stamp(epoch: float) -> str:
    """``epoch`` as the RFC 3339 millisecond UTC timestamp posts carry."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class PostSet:
    """One run's posts: Kafka keys and values (``created_at`` still a placeholder), and what the models see."""

    tag: str
    shape: Shape
    kinds: list[str]
    keys: list[bytes]
    values: list[bytes] = field(repr=False)
    texts: list[str] = field(repr=False)
    images: list[bytes] = field(repr=False)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def text_share(self) -> float:
        return text_share(self.kinds)

    @property
    def images_per_post(self) -> float:
        return images_per_post(self.kinds)

    @property
    def size_bytes(self) -> int:
        return sum(len(value) for value in self.values)


def build_post_set(
    tag: str,
    kinds: Sequence[str],
    texts: Sequence[str],
    jpegs: Sequence[bytes],
    shape: Shape,
    store_dir: Path | None = None,
) -> PostSet:
    """Posts ``<tag>-<n>`` of the given kinds; every text and image tagged with the post's id, so unique.

    ``jpegs`` must hold at least as many images as the posts carry (each post gets its own base image). For the
    ``ref`` shape the images are written to ``store_dir/<tag>/`` and referenced in store :data:`STORE`.
    """
    needed = image_count(kinds)
    if needed > len(jpegs):
        raise ValueError(f"{needed} images needed, only {len(jpegs)} base images made")
    if shape == "ref":
        if store_dir is None:
            raise ValueError("the ref shape needs a store folder")
        (store_dir / tag).mkdir(parents=True, exist_ok=True)
    keys, values, post_texts, post_images = [], [], [], []
    next_image = 0
    for n, kind in enumerate(kinds):
        post_id = f"{tag}-{n:06d}"
        post: dict[str, object] = {
            "schema_version": "post.v1",
            "post_id": post_id,
            "tenant": TENANT,
            "author_id": f"author-{n % 97}",
            "created_at": PLACEHOLDER,
        }
        if kind in ("text", "both"):
            text = f"{texts[n % len(texts)]} #{post_id}"
            post["text"] = text
            post_texts.append(text)
        if kind in ("image", "both"):
            data = tagged_jpeg(jpegs[next_image], post_id)
            next_image += 1
            post_images.append(data)
            if shape == "inline":
                post["images"] = [{"inline": {"data": base64.b64encode(data).decode(), "content_type": "image/jpeg"}}]
            else:
                assert store_dir is not None
                key = f"{tag}/{n:06d}.jpg"
                (store_dir / key).write_bytes(data)
                post["images"] = [{"ref": {"store": STORE, "key": key, "content_type": "image/jpeg"}}]
        keys.append(post_id.encode())
        values.append(json.dumps(post, separators=(",", ":")).encode())
    return PostSet(
        tag=tag, shape=shape, kinds=list(kinds), keys=keys, values=values, texts=post_texts, images=post_images
    )


def shuffled_texts(texts: Iterable[str], seed: int = 0) -> list[str]:
    """The texts in a seeded order, so consecutive posts do not walk the data set's file order."""
    pool = [text for text in texts if text.strip()]
    random.Random(seed).shuffle(pool)
    return pool
