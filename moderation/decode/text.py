"""Text normalisation that undoes common obfuscation before a post's text is encoded.

Evasion spellings (``ｆｒｅｅ``, ``f\u200bree``, Cyrillic ``frее``, Zalgo ``f̸̡̛r̷e``) look like the plain word to a
reader but tokenise into noise. :func:`normalise_text` maps them back so the encoder sees what the reader sees.
Callers keep the raw text separately (for the verdict, the audit trail and reviewers); only the encoder input is
normalised.
"""

from __future__ import annotations

import re
import unicodedata

# Characters that render as nothing (or as blank space) yet split words for a tokenizer. Format characters
# (category Cf: zero-width space/joiners, bidi marks, embeddings and isolates, soft hyphen, tag characters,
# BOM) are removed by category; these are the invisible ones of other categories.
_INVISIBLE = frozenset(
    "\u034f"  # combining grapheme joiner
    "\u115f\u1160\u3164\uffa0"  # Hangul fillers
    "\u2800" + "".join(map(chr, range(0xFE00, 0xFE10)))  # braille blank  # variation selectors
)
_VARIATION_SELECTORS_SUPPLEMENT = range(0xE0100, 0xE01F0)

# Cyrillic and Greek letters that look like Latin ones (after NFKC, which already folds fullwidth and
# mathematical alphanumerics), plus a few Latin variants that NFKC keeps.
_HOMOGLYPHS: dict[str, str] = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l",
    "ү": "y",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "Ԛ": "Q", "Ԝ": "W", "Ү": "Y", "Һ": "H", "Ӏ": "I",
    # Greek
    "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Latin variants
    "ı": "i", "ȷ": "j", "ɑ": "a", "ɡ": "g", "ǀ": "l",
}  # fmt: skip
_HOMOGLYPH_TABLE = str.maketrans(_HOMOGLYPHS)

# Leetspeak substitutions, applied only inside tokens that mix letters with them (see normalise_text).
_LEET_TABLE = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "@": "a", "$": "s"})
_LEET_TOKEN = re.compile(r"[0-9A-Za-z@$]*[A-Za-z][0-9A-Za-z@$]*")
_LEET_CHARS = frozenset("0134578@$")

_WORD = re.compile(r"[^\W\d_]+")
# The only ASCII characters step 1 removes: controls that are not whitespace (as ``str.isspace`` counts it).
_ASCII_INVISIBLE = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]")
_WHITESPACE = re.compile(r"\s+")
_MAX_COMBINING_RUN = 2  # Vietnamese and most scripts stack at most two marks; Zalgo stacks dozens


def normalise_text(text: str, *, leetspeak: bool = False) -> str:
    """Return ``text`` as the reader sees it: the encoder's input, never a replacement for the raw text.

    Steps, in order (normalising twice changes nothing more):

    1. invisible characters removed: format characters (zero-width space and joiners, bidi controls and
       isolates, soft hyphen, tag characters), variation selectors, Hangul fillers, braille blank, and control
       characters other than whitespace;
    2. Unicode NFKC (fullwidth, ligatures, mathematical bold/italic letters, superscripts become plain);
    3. homoglyphs folded: Cyrillic/Greek look-alikes become Latin everywhere when the text has no genuine
       Cyrillic/Greek letter (one without a Latin twin, like ``д`` or ``λ``), else only inside words that mix
       them with Latin letters, so real Russian or Greek text is left alone;
    4. runs of more than two combining marks (Zalgo text) are cut to two;
    5. with ``leetspeak=True``, digits and ``@``/``$`` inside tokens that also contain letters become letters
       (``k1ll`` -> ``kill``); off by default because it also rewrites ``mp3`` or ``covid19``;
    6. every run of whitespace becomes one space, and the ends are stripped.
    """
    # most posts are ASCII, where steps 2 to 4 change nothing and step 1 is one regular expression
    text = _ASCII_INVISIBLE.sub("", text) if text.isascii() else _unobfuscate(text)
    if leetspeak:
        text = _LEET_TOKEN.sub(_fold_leet, text)
    return _WHITESPACE.sub(" ", text).strip()


def _unobfuscate(text: str) -> str:
    """Steps 1 to 4 of :func:`normalise_text`, for any text."""
    text = "".join(ch for ch in text if not _is_invisible(ch))
    text = unicodedata.normalize("NFKC", text)
    text = _fold_homoglyphs(text)
    return unicodedata.normalize("NFC", _cut_combining_runs(text))  # a folded letter may compose with its mark


def _is_invisible(ch: str) -> bool:
    if ch in _INVISIBLE or ord(ch) in _VARIATION_SELECTORS_SUPPLEMENT:
        return True
    category = unicodedata.category(ch)
    return category == "Cf" or (category == "Cc" and not ch.isspace())


def _fold_homoglyphs(text: str) -> str:
    if not any(ch in _HOMOGLYPHS for ch in text):
        return text
    if not any(_is_genuine_cyrillic_or_greek(ch) for ch in text):
        return text.translate(_HOMOGLYPH_TABLE)
    return _WORD.sub(_fold_mixed_script_word, text)


def _is_genuine_cyrillic_or_greek(ch: str) -> bool:
    code = ord(ch)
    in_script = 0x370 <= code <= 0x52F or 0x1F00 <= code <= 0x1FFF
    return in_script and ch.isalpha() and ch not in _HOMOGLYPHS


def _fold_mixed_script_word(match: re.Match[str]) -> str:
    word = match.group(0)
    # Basic Latin up to Latin Extended-B (U+024F) is enough to tell a mixed-script word.
    has_latin = any(ord(ch) < 0x250 and ch not in _HOMOGLYPHS for ch in word)
    return word.translate(_HOMOGLYPH_TABLE) if has_latin else word


def _cut_combining_runs(text: str) -> str:
    out: list[str] = []
    run = 0
    for ch in text:
        run = run + 1 if unicodedata.combining(ch) else 0
        if run <= _MAX_COMBINING_RUN:
            out.append(ch)
    return "".join(out)


def _fold_leet(match: re.Match[str]) -> str:
    token = match.group(0)
    return token.translate(_LEET_TABLE) if any(ch in _LEET_CHARS for ch in token) else token
