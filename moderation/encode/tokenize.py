"""Text batches into model inputs: sentence-transformers' own tokenisation, or the same Rust tokenizer called
directly when that gives exactly the same tensors.

sentence-transformers tokenises through transformers' Python wrapper around the Rust ``tokenizers`` library.
For a batch of 205 short posts (82 characters on average) the wrapper cost about 115 us a text on this project's
development CPU, against 20-35 us for the Rust tokenizer itself, and the wrapper holds the GIL throughout, while
the Rust tokenizer releases it. In a GPU worker, where one process's Python is the wall, that is most of the
prepare step's tokenising time.

The direct path is only taken when it is provably the same: at load, the model's own preprocessing runs on a set
of probe texts (which also leaves transformers' truncation and padding settings in the Rust tokenizer, copied
from there), the direct path runs on the same texts, and every tensor (values, dtype and shape) and every other
entry must be equal. Any difference, or a tokenizer that is not a Rust one, keeps the model's own preprocessing.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

Tokenize = Callable[[list[str]], dict[str, Any]]

#: transformers' names of the tensors a text model takes, and the ``tokenizers.Encoding`` field behind each.
ENCODING_FIELDS = {"input_ids": "ids", "token_type_ids": "type_ids", "attention_mask": "attention_mask"}

#: Texts the two paths must agree on: empty, one character, punctuation, accents and scripts the normaliser
#: changes, emoji, control whitespace, a text longer than any model's token limit (truncation), and lengths that
#: differ (padding).
PROBE_TEXTS = (
    "",
    "a",
    "Hello, World! This is a post.",
    "café naïve Ωmega Straße 東京 한국어 مرحبا 🙂👍🏽",
    "tabs\tand\nnew lines  and   spaces",
    "z̷̢a̵l̶g̸o t̴e̵x̷t",
    "word " * 600,
    "ünïcödé " * 90 + "end",
)


def model_tokenizer(model: Any, probe: Sequence[str] = PROBE_TEXTS) -> tuple[Tokenize, bool]:
    """The tokenising function for ``model`` (a loaded ``SentenceTransformer``), and whether it is the direct one.

    The direct one is returned only if it equals the model's own preprocessing on ``probe``; see the module's
    docstring.
    """
    reference: Tokenize = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers < 6
    rust = getattr(getattr(model, "tokenizer", None), "_tokenizer", None)
    if rust is None or not hasattr(rust, "encode_batch"):
        log.info("text tokeniser: the model's own (no Rust tokenizer found)")
        return reference, False
    texts = list(probe)
    expected = reference(texts)  # also sets transformers' truncation and padding in ``rust``: copied next
    direct = _direct(copy.deepcopy(rust), expected)
    if direct is None or not _gives(direct, texts, expected):
        log.info("text tokeniser: the model's own (the direct Rust path differs on the probe texts)")
        return reference, False
    log.info("text tokeniser: the model's Rust tokenizer, directly (the same tensors on the probe texts)")
    return direct, True


def _direct(rust: Any, template: dict[str, Any]) -> Tokenize | None:
    """A tokenising function that fills ``template``'s tensor entries from the Rust tokenizer's encodings and
    carries its other entries over; None when a tensor entry has no known encoding field."""
    tensors = {key: value.dtype for key, value in template.items() if isinstance(value, torch.Tensor)}
    if not tensors or any(key not in ENCODING_FIELDS for key in tensors):
        return None
    constants = {key: value for key, value in template.items() if key not in tensors}
    encode = getattr(rust, "encode_batch_fast", None) or rust.encode_batch  # _fast: no character offsets

    def tokenize(texts: list[str]) -> dict[str, Any]:
        encodings = encode(texts)
        features: dict[str, Any] = {
            key: torch.from_numpy(np.array([getattr(e, ENCODING_FIELDS[key]) for e in encodings], dtype=np.int64)).to(
                dtype
            )
            for key, dtype in tensors.items()
        }
        features.update(constants)
        return features

    return tokenize


def _gives(tokenize: Tokenize, texts: list[str], expected: dict[str, Any]) -> bool:
    """Whether ``tokenize(texts)`` equals ``expected``: the same keys, tensors equal in values, dtype and shape,
    other entries equal."""
    try:
        got = tokenize(texts)
    except (ValueError, TypeError, RuntimeError):  # e.g. rows of different lengths: the copy does not pad
        return False
    if got.keys() != expected.keys():
        return False
    for key, value in expected.items():
        other = got[key]
        if isinstance(value, torch.Tensor):
            if not isinstance(other, torch.Tensor) or other.dtype != value.dtype or not torch.equal(other, value):
                return False
        elif other != value:
            return False
    return True
