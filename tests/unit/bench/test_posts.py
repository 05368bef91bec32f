"""The benchmark's posts: the exact mix, unique texts and images, valid post.v1 in both shapes."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from moderation.bench.posts import (
    HEIGHT,
    PLACEHOLDER,
    STORE,
    WIDTH,
    Sources,
    base_jpegs,
    build_post_set,
    folder_sources,
    images_per_post,
    mix_shapes,
    perturbed_jpeg,
    stamp,
    tagged_jpeg,
    text_share,
    utc_stamp,
)
from moderation.decode.post import PostDecoder
from moderation.decode.stores import StoreRegistry
from moderation.settings import load_settings
from moderation.types import DecodedPost, Modality, RawRecord


def _photo(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (250, 250), colour).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def sources() -> Sources:
    return Sources(texts=["hello there", "win a prize now", "see you at 8"], photos=[_photo((200, 40, 40))])


@pytest.mark.parametrize("count", [1, 3, 7, 10, 24, 320, 1001])
def test_mix_is_exact(count: int) -> None:
    kinds = mix_shapes(count, seed=3)
    assert len(kinds) == count
    expected = {"text": 0.4 * count, "image": 0.2 * count, "both": 0.4 * count}
    for name, share in expected.items():
        assert abs(kinds.count(name) - share) < 1
    assert mix_shapes(count, seed=3) == kinds


def test_mix_shares() -> None:
    kinds = mix_shapes(320)
    assert text_share(kinds) == pytest.approx(0.8)
    assert images_per_post(kinds) == pytest.approx(0.6)


def test_perturbed_images_differ_and_have_the_size() -> None:
    photo = _photo((10, 120, 30))
    first, second = perturbed_jpeg(photo, 1), perturbed_jpeg(photo, 2)
    assert first != second
    image = Image.open(io.BytesIO(first))
    assert image.size == (WIDTH, HEIGHT) and image.format == "JPEG"
    assert len(base_jpegs([photo], 5)) == 5 and len(set(base_jpegs([photo], 5))) == 5
    assert base_jpegs([photo], 3) + base_jpegs([photo], 2, first=3) == base_jpegs([photo], 5)  # a later call goes on


def test_tagged_jpeg_changes_the_bytes_not_the_pixels() -> None:
    data = perturbed_jpeg(_photo((90, 90, 200)), 0)
    tagged = tagged_jpeg(data, "run-1-000001")
    assert hashlib.sha256(tagged).digest() != hashlib.sha256(data).digest()
    assert Image.open(io.BytesIO(tagged)).tobytes() == Image.open(io.BytesIO(data)).tobytes()
    with pytest.raises(ValueError):
        tagged_jpeg(b"\x89PNG....", "x")


def test_stamp_keeps_the_width() -> None:
    stamped = utc_stamp(1_780_000_000.123)
    assert len(stamped) == len(PLACEHOLDER)
    value = json.dumps({"created_at": PLACEHOLDER, "x": 1}, separators=(",", ":")).encode()
    assert json.loads(stamp(value, stamped))["created_at"] == stamped


@pytest.mark.parametrize("shape", ["inline", "ref"])
def test_post_sets_decode_as_valid_posts(sources: Sources, shape: str, tmp_path: Path) -> None:
    kinds = mix_shapes(10)
    jpegs = base_jpegs(sources.photos, 6)
    posts = build_post_set("t1", kinds, sources.texts, jpegs, shape, tmp_path)  # type: ignore[arg-type]
    settings = load_settings(stores={STORE: str(tmp_path)})
    decoder = PostDecoder(settings, StoreRegistry.from_folders(settings.stores))
    decoded = []
    for offset, (key, value) in enumerate(zip(posts.keys, posts.values, strict=True)):
        value = stamp(value, utc_stamp(1_780_000_000 + offset))
        outcome = decoder.decode(RawRecord("posts", 0, offset, key, value, 0))
        assert isinstance(outcome, DecodedPost), outcome
        decoded.append(outcome)
    modalities = [set(post.modalities) for post in decoded]
    expected = [
        {Modality.TEXT} if k == "text" else {Modality.IMAGE} if k == "image" else {Modality.TEXT, Modality.IMAGE}
        for k in kinds
    ]
    assert modalities == expected
    texts = [post.text for post in decoded if post.text]
    images = [image.sha256 for post in decoded for image in post.images]
    assert len(set(texts)) == len(texts) == len(posts.texts)
    assert len(set(images)) == len(images) == len(posts.images) == 6
    again = build_post_set("t2", kinds, sources.texts, jpegs, "inline")
    assert not {hashlib.sha256(i).hexdigest() for i in again.images} & set(images)
    assert not set(again.texts) & set(texts)


def test_too_few_images_is_an_error(sources: Sources) -> None:
    with pytest.raises(ValueError, match="images needed"):
        build_post_set("t", ["image", "both"], sources.texts, base_jpegs(sources.photos, 1), "inline")


def test_folder_sources(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(_photo((1, 2, 3)))
    (tmp_path / "texts.txt").write_text("one\n\ntwo\n")
    loaded = folder_sources(tmp_path)
    assert loaded.texts == ["one", "two"] and len(loaded.photos) == 1
    with pytest.raises(FileNotFoundError):
        folder_sources(tmp_path / "photos")
