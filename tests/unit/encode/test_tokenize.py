"""The direct Rust tokenising path: taken for the shipped model, equal to sentence-transformers' own preprocessing,
and refused whenever it could differ."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from moderation.decode.text import normalise_text
from moderation.encode import TextEncoder
from moderation.encode.bench import synthetic_texts
from moderation.encode.tokenize import PROBE_TEXTS, model_tokenizer


def _equal(got: dict[str, Any], expected: dict[str, Any]) -> bool:
    return got.keys() == expected.keys() and all(
        torch.equal(got[key], value) and got[key].dtype == value.dtype
        if isinstance(value, torch.Tensor)
        else got[key] == value
        for key, value in expected.items()
    )


class _Model:
    """A stand-in for a SentenceTransformer: its own ``preprocess``, and the tokenizer it names."""

    def __init__(self, preprocess: Any, tokenizer: Any = None) -> None:
        self.preprocess = preprocess
        if tokenizer is not None:
            self.tokenizer = tokenizer


def test_the_shipped_text_model_takes_the_direct_path(text_encoder: TextEncoder) -> None:
    model: Any = text_encoder._model  # type: ignore[attr-defined]
    tokenize, direct = model_tokenizer(model)
    assert direct
    texts = [normalise_text(text) for text in synthetic_texts(300, seed=5)] + list(PROBE_TEXTS)
    for start in range(0, len(texts), 64):
        chunk = texts[start : start + 64]
        assert _equal(tokenize(chunk), model.preprocess(chunk))


@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=400), min_size=1, max_size=6))
@example(["   ", "\u200b", "a" * 3000])
def test_direct_and_own_tokenising_agree_on_any_text(text_encoder: TextEncoder, texts: list[str]) -> None:
    model: Any = text_encoder._model  # type: ignore[attr-defined]
    tokenize, _ = model_tokenizer(model)
    assert _equal(tokenize(texts), model.preprocess(texts))


def test_a_model_without_a_rust_tokenizer_keeps_its_own() -> None:
    def own(texts: list[str]) -> dict[str, Any]:
        return {"input_ids": torch.zeros((len(texts), 4), dtype=torch.long)}

    tokenize, direct = model_tokenizer(_Model(own))
    assert tokenize is own and not direct


def test_a_direct_path_that_differs_from_the_models_own_is_refused(text_encoder: TextEncoder) -> None:
    real: Any = text_encoder._model  # type: ignore[attr-defined]

    def shifted(texts: list[str]) -> dict[str, Any]:  # a model whose own preprocessing does something more
        features = dict(real.preprocess(texts))
        features["input_ids"] = features["input_ids"] + 1
        return features

    tokenize, direct = model_tokenizer(_Model(shifted, real.tokenizer))
    assert tokenize is shifted and not direct


def test_an_input_the_rust_tokenizer_does_not_make_is_refused(text_encoder: TextEncoder) -> None:
    real: Any = text_encoder._model  # type: ignore[attr-defined]

    def with_pixels(texts: list[str]) -> dict[str, Any]:
        return {**real.preprocess(texts), "pixel_values": torch.zeros((len(texts), 3))}

    tokenize, direct = model_tokenizer(_Model(with_pixels, real.tokenizer))
    assert tokenize is with_pixels and not direct
