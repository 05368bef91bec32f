"""Text normalisation: what the reader sees is what the encoder gets."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from moderation.decode import text as text_module
from moderation.decode.text import normalise_text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ｆｒｅｅ ｍｏｎｅｙ", "free money"),  # fullwidth
        ("𝐟𝐫𝐞𝐞 𝓂ℴ𝓃ℯ𝓎", "free money"),  # mathematical alphanumerics
        ("ﬁnd", "find"),  # ligature
        ("fr\u200bee m\u200con\u200dey", "free money"),  # zero-width space, non-joiner, joiner
        ("fr\u00adee\u2060 \ufeffmoney", "free money"),  # soft hyphen, word joiner, BOM
        ("\u202eyenom eerf\u202c", "yenom eerf"),  # bidi override: removed, the logical order stays
        ("\u2066free\u2069 \u200emoney\u200f", "free money"),  # bidi isolates and marks
        ("free\U000e0041\U000e0042 money", "free money"),  # tag characters (hidden text smuggling)
        ("free\ufe0f money\u3164", "free money"),  # variation selector, Hangul filler
        ("frее mоnеу", "free money"),  # Cyrillic е, о, у
        ("ΡΑΥΡΑL", "PAYPAL"),  # Greek capitals, whole text look-alikes
        ("  free\t\n\u00a0money  \u3000 now ", "free money now"),  # whitespace of every kind
        ("free\x00\x1bmoney", "freemoney"),  # control characters
    ],
)
def test_obfuscations_are_undone(raw: str, expected: str) -> None:
    assert normalise_text(raw) == expected


def test_genuine_cyrillic_and_greek_text_is_kept() -> None:
    assert normalise_text("я иду в магазин с другом") == "я иду в магазин с другом"
    assert normalise_text("καλημέρα κόσμε") == "καλημέρα κόσμε"
    # In real Russian text only words that mix in Latin letters are folded.
    assert normalise_text("Привет, это pаypal") == "Привет, это paypal"


def test_accents_and_other_scripts_are_kept() -> None:
    for text in ("café crème", "Tiếng Việt", "日本語のテキスト", "مرحبا بالعالم", "👍 ok"):
        assert normalise_text(text) == text


def test_zalgo_marks_are_cut_to_two_per_letter() -> None:
    zalgo = "z" + "\u0336\u0321\u031b\u0316\u0317" + "ap"
    assert normalise_text(zalgo) == "z\u0336\u0321ap"


def test_leetspeak_is_optional() -> None:
    assert normalise_text("k1ll y0u n0w, 2024") == "k1ll y0u n0w, 2024"
    assert normalise_text("k1ll y0u n0w, 2024", leetspeak=True) == "kill you now, 2024"
    assert normalise_text("fr33 m0n3y @ss $hit", leetspeak=True) == "free money ass shit"


@given(st.text())
def test_no_invisible_characters_or_odd_spaces_remain(text: str) -> None:
    result = normalise_text(text)
    assert result == result.strip() and "  " not in result
    assert not any(unicodedata.category(ch) in ("Cf", "Cc") for ch in result)
    assert all(ch == " " for ch in result if ch.isspace())


@given(st.text())
@example("e\u200b\u0301")  # removing the zero-width space lets e and the accent compose
@example("\u043e\u0301k")  # a folded Cyrillic o composes with its accent
def test_normalising_twice_changes_nothing(text: str) -> None:
    once = normalise_text(text)
    assert normalise_text(once) == once


@given(st.text(alphabet=st.characters(max_codepoint=127)))
@example("".join(map(chr, range(128))))
def test_the_ascii_shortcut_matches_the_full_steps(text: str) -> None:
    assert text_module._ASCII_INVISIBLE.sub("", text) == text_module._unobfuscate(text)
