"""The taxonomy is the one the model card documents, and unknown names fail with the list of known ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from moderation.errors import ConfigError
from moderation.taxonomy import CATEGORY_NAMES, category, mapping_table_markdown

MODEL_CARD = Path(__file__).parents[3] / "docs" / "MODEL_CARD.md"


def test_model_card_carries_the_generated_mapping_table() -> None:
    assert mapping_table_markdown() in MODEL_CARD.read_text(), "regenerate the table in docs/MODEL_CARD.md"


def test_category_names_are_snake_case_and_unique() -> None:
    assert len(set(CATEGORY_NAMES)) == len(CATEGORY_NAMES)
    assert all(name.replace("_", "").isalpha() and name.islower() for name in CATEGORY_NAMES)
    assert category("spam").name == "spam"
    with pytest.raises(ConfigError, match="self_harm"):
        category("nudity")
