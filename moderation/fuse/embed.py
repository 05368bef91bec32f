"""Dataset files to embedded posts, with every text and photo encoded once and cached on disk.

The cache lives in ``data/cache/<encoder version>/`` (``keys.txt`` and ``vectors.npy``), keyed by the SHA-256 of
the text or of the image bytes, so a rebuild, a second model or an evaluation reuses what was encoded before; the
encoder's version (its weights digest) is in the folder name, so new weights never meet stale vectors.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from moderation.decode.images import ImageLimits
from moderation.decode.stores import StoreRegistry
from moderation.errors import ConfigError, InputRejected
from moderation.fuse.datasets import TEXTILE_STORE, textile_root
from moderation.fuse.inputs import FusionInput, LabeledInput
from moderation.fuse.model import EncoderRef

DEFAULT_CACHE = Path("data/cache")
_CHUNK = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Row:
    """One line of a dataset file: a ``post.v1`` document and its labels (category -> 0 or 1)."""

    post: dict[str, Any]
    labels: dict[str, int]


def read_rows(path: Path) -> list[Row]:
    """The rows of a dataset JSONL file; a malformed line raises ``ConfigError`` naming file and line."""
    if not path.is_file():
        raise ConfigError(f"no dataset file {path}: build the datasets with `moderation datasets build`")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
            rows.append(Row(post=document["post"], labels={k: int(v) for k, v in document["labels"].items()}))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}:{number}: expected {{'post': <post.v1>, 'labels': {{...}}}} ({exc})") from exc
    return rows


def dataset_name(path: Path) -> str:
    """The dataset a split file belongs to: ``meta.json`` beside it, else the folder's name."""
    meta = path.parent / "meta.json"
    if meta.is_file():
        return str(json.loads(meta.read_text())["name"])
    return path.parent.name


class DiskEmbeddingCache:
    """Vectors of one encoder version on disk, keyed by content SHA-256."""

    def __init__(self, root: Path, version: str, dim: int) -> None:
        self.folder = root / _UNSAFE.sub("_", version)
        self.dim = dim
        self._vectors: dict[str, np.ndarray] = {}
        keys_file, vectors_file = self.folder / "keys.txt", self.folder / "vectors.npy"
        if keys_file.is_file() and vectors_file.is_file():
            keys = keys_file.read_text().split()
            vectors = np.load(vectors_file)
            if vectors.shape == (len(keys), dim):
                self._vectors = dict(zip(keys, vectors, strict=True))

    def missing(self, keys: Sequence[str]) -> list[str]:
        """The distinct keys not in the cache, in first-seen order."""
        return [k for k in dict.fromkeys(keys) if k not in self._vectors]

    def add(self, keys: Sequence[str], vectors: torch.Tensor) -> None:
        """Add rows and write the cache back (atomically: a crash leaves the previous files)."""
        for key, vector in zip(keys, vectors.numpy().astype(np.float32), strict=True):
            self._vectors[key] = vector
        self.folder.mkdir(parents=True, exist_ok=True)
        names = list(self._vectors)
        stacked = np.stack([self._vectors[k] for k in names]) if names else np.zeros((0, self.dim), np.float32)
        with open(self.folder / "vectors.tmp.npy", "wb") as handle:
            np.save(handle, stacked)
        (self.folder / "keys.tmp").write_text("\n".join(names) + "\n")
        os.replace(self.folder / "vectors.tmp.npy", self.folder / "vectors.npy")
        os.replace(self.folder / "keys.tmp", self.folder / "keys.txt")

    def get(self, keys: Sequence[str]) -> torch.Tensor:
        if not keys:
            return torch.zeros(0, self.dim)
        return torch.from_numpy(np.stack([self._vectors[k] for k in keys]))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fill(
    cache: DiskEmbeddingCache,
    keys: list[str],
    items: dict[str, Any],
    encode: Callable[[list[Any]], torch.Tensor],
    label: str,
    progress: bool,
) -> None:
    """Encode the cache's misses among ``keys`` in chunks, saving after each chunk (an interrupted run resumes)."""
    todo = cache.missing(keys)
    chunks = range(0, len(todo), _CHUNK * 8)
    bar = tqdm(total=len(todo), desc=f"encode {label}", unit=label, disable=not progress or not todo)
    for start in chunks:
        part = todo[start : start + _CHUNK * 8]
        vectors = torch.cat([encode([items[k] for k in part[i : i + _CHUNK]]) for i in range(0, len(part), _CHUNK)])
        cache.add(part, vectors)
        bar.update(len(part))
    bar.close()


def dataset_stores(extra: dict[str, Path] | None = None) -> StoreRegistry:
    """The stores dataset images point into: the ``textile`` photos plus any configured ones."""
    return StoreRegistry.from_folders({TEXTILE_STORE: textile_root(), **(extra or {})})


@dataclass
class Encoders:
    """The two encoders a model uses, created on first need (loading them takes seconds)."""

    text_name: str
    image_name: str
    device: str = "cpu"
    _text: Any = None
    _image: Any = None

    def text(self) -> Any:
        if self._text is None:
            from moderation.encode import create_encoder

            self._text = create_encoder(self.text_name, device=self.device)
        return self._text

    def image(self) -> Any:
        if self._image is None:
            from moderation.encode import create_encoder

            self._image = create_encoder(self.image_name, device=self.device)
        return self._image

    def refs(self) -> tuple[EncoderRef, EncoderRef]:
        text, image = self.text(), self.image()
        return EncoderRef(text.name, text.version, text.dim), EncoderRef(image.name, image.version, image.dim)


def embed_rows(
    rows: Sequence[Row],
    categories: Sequence[str],
    encoders: Encoders,
    *,
    cache_root: Path = DEFAULT_CACHE,
    stores: StoreRegistry | None = None,
    limits: ImageLimits | None = None,
    progress: bool = True,
) -> LabeledInput:
    """Embed the posts of ``rows`` (through the disk cache) with labels for ``categories`` (NaN where absent)."""
    stores = stores or dataset_stores()
    limits = limits or ImageLimits(max_bytes=8_000_000, max_pixels=40_000_000, max_frames=100)
    text_encoder, image_encoder = encoders.text(), encoders.image()
    texts: dict[str, str] = {}
    text_keys: list[str | None] = []
    images: dict[str, bytes] = {}
    image_keys: list[str] = []
    image_post: list[int] = []
    for index, row in enumerate(rows):
        text = row.post.get("text") or None
        if text is not None:
            key = _sha256(text.encode())
            texts[key] = text
        text_keys.append(key if text is not None else None)
        for image in row.post.get("images", []):
            try:
                data = _image_bytes(image, stores, limits)
            except InputRejected as exc:
                raise ConfigError(f"post {row.post.get('post_id')}: {exc}") from exc
            key = _sha256(data)
            images[key] = data
            image_keys.append(key)
            image_post.append(index)
    text_cache = DiskEmbeddingCache(cache_root, text_encoder.version, text_encoder.dim)
    _fill(text_cache, [k for k in text_keys if k], texts, text_encoder.encode, "texts", progress)
    image_cache = DiskEmbeddingCache(cache_root, image_encoder.version, image_encoder.dim)
    _fill(image_cache, image_keys, images, lambda batch: image_encoder.encode_bytes(batch, limits), "images", progress)
    present = torch.tensor([k is not None for k in text_keys], dtype=torch.bool)
    text_matrix = torch.zeros(len(rows), text_encoder.dim)
    if bool(present.any()):
        text_matrix[present] = text_cache.get([k for k in text_keys if k])
    labels = torch.tensor(
        [[float(row.labels[c]) if c in row.labels else math.nan for c in categories] for row in rows]
    ).reshape(len(rows), len(categories))
    inputs = FusionInput(
        text=text_matrix,
        text_present=present,
        image_emb=image_cache.get(image_keys),
        image_post_index=torch.tensor(image_post, dtype=torch.long),
    )
    return LabeledInput(inputs, labels, tuple(categories), tuple(str(r.post.get("post_id")) for r in rows))


def _image_bytes(image: dict[str, Any], stores: StoreRegistry, limits: ImageLimits) -> bytes:
    if "ref" in image:
        return stores.read(image["ref"]["store"], image["ref"]["key"], limits.max_bytes)
    if "inline" in image:
        import base64

        return base64.b64decode(image["inline"]["data"], validate=True)
    raise ConfigError(f"image {image!r} is neither {{'ref': ...}} nor {{'inline': ...}}")
