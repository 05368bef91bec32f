"""Dataset rows become embedded posts; every text and photo is encoded once and then served from the disk cache."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from moderation.decode.images import ImageLimits
from moderation.decode.stores import StoreRegistry
from moderation.fuse.embed import DiskEmbeddingCache, Encoders, embed_rows, read_rows


class FakeText:
    name, version, dim = "fake-text", "fake-text@1", 4

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        self.calls += len(texts)
        return torch.tensor([[len(t), t.count("a"), 1.0, 0.0] for t in texts])


class FakeImage:
    name, version, dim = "fake-image", "fake-image@1", 2

    def __init__(self) -> None:
        self.calls = 0

    def encode_bytes(self, images: Sequence[bytes], limits: ImageLimits) -> torch.Tensor:
        self.calls += len(images)
        return torch.tensor([[len(b), b[-3]] for b in images], dtype=torch.float32)


def _jpeg(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(out, format="JPEG")
    return out.getvalue()


def _write(path: Path, store: Path) -> None:
    (store / "a.jpg").write_bytes(_jpeg(10))
    inline = {"inline": {"data": base64.b64encode(_jpeg(200)).decode(), "content_type": "image/jpeg"}}
    ref = {"ref": {"store": "media", "key": "a.jpg", "content_type": "image/jpeg"}}
    rows = [
        {"post": {"post_id": "1", "text": "banana"}, "labels": {"spam": 1}},
        {"post": {"post_id": "2", "images": [ref, inline]}, "labels": {"spam": 0}},
        {"post": {"post_id": "3"}, "labels": {}},
        {"post": {"post_id": "4", "text": "banana", "images": [ref]}, "labels": {"spam": 1}},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_rows_embed_with_presence_and_cache(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    _write(tmp_path / "train.jsonl", store)
    text, image = FakeText(), FakeImage()
    encoders = Encoders("fake-text", "fake-image", _text=text, _image=image)
    stores = StoreRegistry.from_folders({"media": store})
    rows = read_rows(tmp_path / "train.jsonl")
    data = embed_rows(rows, ("spam",), encoders, cache_root=tmp_path / "cache", stores=stores, progress=False)
    assert data.inputs.has_text().tolist() == [True, False, False, True]
    assert data.inputs.image_post_index.tolist() == [1, 1, 3]
    assert data.labels[2].isnan().all() and data.labels[:, 0].tolist()[:2] == [1.0, 0.0]
    assert (text.calls, image.calls) == (1, 2)  # duplicates encoded once
    again = embed_rows(rows, ("spam",), encoders, cache_root=tmp_path / "cache", stores=stores, progress=False)
    assert (text.calls, image.calls) == (1, 2)  # second pass served from disk
    assert torch.equal(again.inputs.image_emb, data.inputs.image_emb)


def test_cache_ignores_files_of_another_width(tmp_path: Path) -> None:
    cache = DiskEmbeddingCache(tmp_path, "enc@1", dim=3)
    cache.add(["k"], torch.ones(1, 3))
    assert DiskEmbeddingCache(tmp_path, "enc@1", dim=3).missing(["k", "j"]) == ["j"]
    assert DiskEmbeddingCache(tmp_path, "enc@1", dim=4).missing(["k"]) == ["k"]
