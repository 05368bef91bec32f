"""The README documents every setting: its table is the one the settings generate."""

from __future__ import annotations

from pathlib import Path

from moderation.cli import settings_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_is_current() -> None:
    text = README.read_text()
    start, end = "<!-- settings-table:start -->\n", "<!-- settings-table:end -->"
    table = text[text.index(start) + len(start) : text.index(end)].strip()
    assert table == settings_table(), "regenerate it: moderation settings --markdown"
