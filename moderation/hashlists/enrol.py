"""Turning images into list entries: the exact SHA-256 and the PDQ of the image and of its centred crops."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from moderation.decode.images import ImageLimits
from moderation.errors import ConfigError, DecodeError
from moderation.hashlists.entries import HashEntry, HashKind, utc_now
from moderation.hashlists.pdq import CROP_VARIANTS, decode_for_hash, image_variants, pdq_of_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp"}


def entries_for_image(
    data: bytes,
    list_name: str,
    category: str,
    source: str,
    limits: ImageLimits,
    *,
    min_quality: int = 50,
    crops: Sequence[float] = CROP_VARIANTS,
    perceptual: bool = True,
    added_at: str | None = None,
    name: str = "<image>",
) -> list[HashEntry]:
    """The exact entry of these bytes and, with ``perceptual``, one PDQ entry per variant (the image and its
    centred ``crops``; identical hashes kept once). ``ConfigError`` when the image cannot be decoded within
    ``limits`` or its PDQ quality is below ``min_quality`` (a flat image: its PDQ would match unrelated ones)."""
    stamp = added_at or utc_now()
    digest = hashlib.sha256(data).hexdigest()
    entries = [HashEntry.create(HashKind.SHA256, digest, list_name, category, source, stamp)]
    if not perceptual:
        return entries
    try:
        image = decode_for_hash(data, limits)
    except DecodeError as exc:
        raise ConfigError(f"{name}: {exc.detail} (add it with --no-perceptual to list its exact bytes only)") from None
    seen: set[str] = set()
    for variant, picture in image_variants(image, crops):
        pdq = pdq_of_image(picture)
        if variant == "original" and pdq.quality < min_quality:
            raise ConfigError(
                f"{name}: PDQ quality {pdq.quality} is below {min_quality} (a flat or tiny image, whose perceptual "
                "hash would match unrelated images); add it with --no-perceptual to list its exact bytes only"
            )
        if pdq.hex in seen or pdq.quality < min_quality:
            continue
        seen.add(pdq.hex)
        entries.append(
            HashEntry.create(
                HashKind.PDQ,
                pdq.hex,
                list_name,
                category,
                source,
                stamp,
                quality=pdq.quality,
                media_sha256=digest,
                variant=variant,
            )
        )
    return entries


def image_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The given files, and the image files (by suffix) under the given folders, sorted."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            yield path
        else:
            raise ConfigError(f"{path}: no such file or folder")
