"""Entries validate every field, and JSON lines round-trip with line-numbered errors."""

from __future__ import annotations

import io

import pytest

from moderation.errors import ConfigError
from moderation.hashlists.entries import HashEntry, HashKind, read_jsonl, write_jsonl

SHA = "ab" * 32
PDQ = "0f" * 32


def test_create_normalises_and_validates() -> None:
    entry = HashEntry.create("sha256", SHA.upper(), "ncmec", "csam", "feed", "2026-01-01T00:00:00Z")
    assert entry.value == SHA and entry.kind is HashKind.SHA256 and entry.field == f"ncmec:{SHA}"
    for bad, match in (
        (dict(kind="md5"), "kind"),
        (dict(value="xyz"), "64 hexadecimal"),
        (dict(list_name="Bad List"), "list name"),
        (dict(category="CSAM"), "category"),
        (dict(added_at="yesterday"), "added_at"),
    ):
        arguments = dict(kind="pdq", value=PDQ, list_name="l", category="csam", source="", added_at=None) | bad
        with pytest.raises(ConfigError, match=match):
            HashEntry.create(**arguments)  # type: ignore[arg-type]


def test_stored_form_round_trips() -> None:
    entry = HashEntry.create("pdq", PDQ, "l", "csam", "s", quality=90, media_sha256=SHA, variant="crop-5%")
    assert HashEntry.from_stored(HashKind.PDQ, entry.field, entry.stored()) == entry


def test_jsonl_round_trip_and_defaults() -> None:
    entries = [
        HashEntry.create("sha256", SHA, "a", "csam", "s", "2026-01-01T00:00:00Z"),
        HashEntry.create("pdq", PDQ, "b", "terror", "t", "2026-01-02T00:00:00Z", quality=80),
    ]
    out = io.StringIO()
    assert write_jsonl(entries, out) == 2
    assert list(read_jsonl(io.StringIO(out.getvalue()))) == entries
    moved = list(read_jsonl(io.StringIO(out.getvalue()), list_name="c"))
    assert {e.list for e in moved} == {"c"}
    bare = io.StringIO(f'{{"kind": "sha256", "value": "{SHA}"}}\n\n')
    (filled,) = read_jsonl(bare, list_name="x", category="csam", source="import")
    assert (filled.list, filled.category, filled.source) == ("x", "csam", "import")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not json\n", "x.jsonl:1: not JSON"),
        ('{"kind": "sha256"}\n', "x.jsonl:1: missing value, list, category"),
        (f'{{"kind": "sha256", "value": "{SHA}", "list": "l", "category": "c", "colour": 1}}\n', "unknown field"),
        (f'\n{{"kind": "pdq", "value": "{SHA[:-1]}", "list": "l", "category": "c"}}\n', "x.jsonl:2: pdq value"),
    ],
)
def test_jsonl_errors_name_the_line(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        list(read_jsonl(io.StringIO(text), name="x.jsonl"))
