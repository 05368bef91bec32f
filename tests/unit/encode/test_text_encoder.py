"""The text encoder: shapes, order, batch invariance, and normalisation of obfuscated spellings."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

from moderation.encode import TextEncoder
from moderation.encode.bench import synthetic_texts

from .conftest import BATCH


def test_shape_dtype_version(text_encoder: TextEncoder) -> None:
    vectors = text_encoder.encode(["a short one", "and a rather longer text than the first one"])
    assert vectors.shape == (2, text_encoder.dim) == (2, 384)
    assert vectors.dtype == torch.float32 and vectors.device.type == "cpu"
    assert re.fullmatch(r"minilm-l6@[0-9a-f]{12}", text_encoder.version)
    assert text_encoder.encode([]).shape == (0, 384)


def test_rows_come_back_in_input_order(text_encoder: TextEncoder) -> None:
    texts = ["x " * 50, "y", "z z z"]
    together = text_encoder.encode(texts)
    for row, text in enumerate(texts):
        assert torch.allclose(together[row], text_encoder.encode([text])[0], atol=1e-5)


def test_batch_invariance(text_encoder: TextEncoder) -> None:
    """A text alone and inside a batch of 64 of mixed lengths (so padded) gives the same vector within 1e-5."""
    texts = synthetic_texts(BATCH, seed=3)
    batch = text_encoder.encode(texts)
    alone = torch.cat([text_encoder.encode([text]) for text in texts])
    assert (batch - alone).abs().max().item() < 1e-5


def test_obfuscated_and_plain_spellings_encode_alike(text_encoder: TextEncoder) -> None:
    plain = "you are a stupid idiot, send me free money"
    obfuscated = [
        "ｙｏｕ ａｒｅ ａ ｓｔｕｐｉｄ ｉｄｉｏｔ, ｓｅｎｄ ｍｅ ｆｒｅｅ ｍｏｎｅｙ",  # fullwidth
        "you are a st\u200bu\u200bpid id\u200diot, send me fr\u00adee mon\u2060ey",  # zero-width and soft hyphen
        "уоu аrе а stuріd іdіоt, sеnd mе frее mоnеу",  # Cyrillic look-alikes
        "you are a \u2066stupid\u2069 idiot,\u00a0\u00a0send me  free\tmoney",  # bidi isolates, odd spaces
        "𝐲𝐨𝐮 𝐚𝐫𝐞 𝐚 𝐬𝐭𝐮𝐩𝐢𝐝 𝐢𝐝𝐢𝐨𝐭, 𝐬𝐞𝐧𝐝 𝐦𝐞 𝐟𝐫𝐞𝐞 𝐦𝐨𝐧𝐞𝐲",  # mathematical bold
    ]
    vectors = text_encoder.encode([plain, *obfuscated])
    similarity = torch.nn.functional.cosine_similarity(vectors[1:], vectors[:1])
    assert similarity.min().item() > 0.999


def test_normalisation_is_what_closes_the_gap(text_encoder: TextEncoder) -> None:
    """Without normalisation the model sees noise: the look-alike spelling lands far from the plain one."""
    plain, spoofed = "send me free money", "sеnd mе frее mоnеу"
    model = text_encoder._model  # type: ignore[attr-defined]  # the raw sentence-transformers model
    raw = torch.as_tensor(model.encode([plain, spoofed]))
    assert torch.nn.functional.cosine_similarity(raw[:1], raw[1:]).item() < 0.9


def test_rows_padded_to_a_bucket_do_not_change_the_real_rows(text_encoder: TextEncoder) -> None:
    """CUDA pads a batch's rows to a power of two by repeating the last one; the real rows must not move."""
    from moderation.encode.text import _cut_tokens, _repeat_rows

    model: Any = text_encoder._model  # type: ignore[attr-defined]
    features = text_encoder._tokenize(["a short one", "and a rather longer text than the first one", "mid"])  # type: ignore[attr-defined]
    padded = _repeat_rows(features, 8)
    assert padded["input_ids"].shape[0] == 8 and bool((padded["input_ids"][3:] == features["input_ids"][-1]).all())
    assert _repeat_rows(features, 2) is features
    with torch.inference_mode():
        alone = model(dict(features))["sentence_embedding"]
        grown = model(padded)["sentence_embedding"][:3]
    assert torch.allclose(alone, grown, atol=1e-5)
    cut = _cut_tokens(features, 4)
    assert cut["input_ids"].shape == (3, 4) and cut["attention_mask"].shape == (3, 4)


def test_warm_up_does_nothing_on_the_cpu(text_encoder: TextEncoder) -> None:
    before = text_encoder.encode(["same text"])
    text_encoder.warm_up()
    assert torch.equal(text_encoder.encode(["same text"]), before)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_text_batches_match_single_texts() -> None:
    from moderation.encode import create_text_encoder

    cuda = create_text_encoder("minilm-l6", device="cuda", batch_size=BATCH)
    cuda.warm_up()
    texts = synthetic_texts(37, seed=3)
    together = cuda.encode(texts)
    alone = torch.cat([cuda.encode([text]) for text in texts])
    assert torch.isfinite(together).all()
    assert torch.nn.functional.cosine_similarity(together, alone).min().item() > 0.99
