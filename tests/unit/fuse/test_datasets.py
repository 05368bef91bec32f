"""The datasets are reproducible, their splits are disjoint by text and photo, and the proxy's cells are balanced."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from moderation.fuse.datasets import (
    PROXY_SIZES,
    SPLITS,
    build_dataset,
    build_proxy_multimodal,
    build_sms_spam,
    group_key,
)

SCHEMA = json.loads((Path(__file__).parents[3] / "schemas" / "post.v1.json").read_text())


def _owners(splits: dict[str, list[dict[str, Any]]], key: str) -> dict[str, set[str]]:
    owners: dict[str, set[str]] = {}
    for split, rows in splits.items():
        for row in rows:
            post = row["post"]
            values = [group_key(post["text"])] if key == "text" and "text" in post else []
            values += [i["ref"]["key"] for i in post.get("images", [])] if key == "photo" else []
            for value in values:
                owners.setdefault(value, set()).add(split)
    return owners


@pytest.fixture(scope="module")
def sms() -> dict[str, list[dict[str, Any]]]:
    return build_sms_spam(seed=0)


@pytest.fixture(scope="module")
def proxy() -> dict[str, list[dict[str, Any]]]:
    return build_proxy_multimodal(seed=0)


def test_sms_spam_is_grouped_70_10_20(sms: dict[str, list[dict[str, Any]]]) -> None:
    sizes = {split: len(rows) for split, rows in sms.items()}
    total = sum(sizes.values())
    assert total == 4862
    assert abs(sizes["train"] / total - 0.7) < 0.01 and abs(sizes["test"] / total - 0.2) < 0.01
    assert all(len(splits) == 1 for splits in _owners(sms, "text").values())
    spam_share = {split: sum(r["labels"]["spam"] for r in rows) / len(rows) for split, rows in sms.items()}
    assert max(spam_share.values()) - min(spam_share.values()) < 0.02


def test_proxy_sizes_balance_and_disjointness(proxy: dict[str, list[dict[str, Any]]]) -> None:
    for split, rows in proxy.items():
        assert len(rows) == PROXY_SIZES[split]
        cells = Counter((r["labels"]["text_decided"], r["labels"]["image_decided"]) for r in rows)
        assert set(cells.values()) == {PROXY_SIZES[split] // 4}
        for row in rows:
            labels = row["labels"]
            assert labels["combination_decided"] == labels["text_decided"] ^ labels["image_decided"]
            defect = not row["post"]["images"][0]["ref"]["key"].startswith("nominal/")
            assert labels["image_decided"] == int(defect)
    assert all(len(splits) == 1 for splits in _owners(proxy, "text").values())
    assert all(len(splits) == 1 for splits in _owners(proxy, "photo").values())


def test_posts_are_valid_post_v1(proxy: dict[str, list[dict[str, Any]]], sms: dict[str, list[dict[str, Any]]]) -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for rows in (proxy["val"][:50], sms["val"][:50]):
        for row in rows:
            validator.validate(row["post"])


def test_build_is_reproducible(tmp_path: Path) -> None:
    first = build_dataset("sms-spam", 3, tmp_path / "a")
    second = build_dataset("sms-spam", 3, tmp_path / "b")
    for split in SPLITS:
        assert (first / f"{split}.jsonl").read_bytes() == (second / f"{split}.jsonl").read_bytes()
    other = build_dataset("sms-spam", 4, tmp_path / "c")
    assert (first / "test.jsonl").read_bytes() != (other / "test.jsonl").read_bytes()
    meta = json.loads((first / "meta.json").read_text())
    assert meta["name"] == "sms-spam" and meta["seed"] == 3 and meta["categories"] == ["spam"]
