"""What every encoder offers, and the small pieces they share (device, threads, inference mode, versions).

Encoders are protocols, not a base class: the registry returns any object with these attributes and methods,
so a test double or a wrapper around another runtime needs no inheritance. Tell text from image encoders by
``modality`` (``isinstance`` against a protocol only checks that the attributes exist).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import torch

from moderation.errors import ConfigError, DecodeError, ModelError
from moderation.types import Modality

if TYPE_CHECKING:
    from moderation.decode.images import ImageLimits

T = TypeVar("T")


@runtime_checkable
class Encoder(Protocol):
    """A model that turns items of one modality into fixed-size float vectors."""

    name: str  #: the registry name it was created under
    version: str  #: stable id of model + weights (``name@<sha256 prefix>``); part of every cache key
    modality: Modality
    dim: int  #: length of each output vector
    device: torch.device  #: where the model runs; outputs are always returned on the CPU

    def warm_up(self) -> None:
        """Run the model once at every batch shape it pads to (CUDA; nothing on the CPU), so that no post pays
        the GPU's one-time set-up for a shape (kernel and convolution plan selection, seconds per shape)."""
        ...


@runtime_checkable
class TextEncoder(Encoder, Protocol):
    """Encodes texts; :func:`~moderation.decode.text.normalise_text` is applied inside, callers pass raw text.

    Like images, texts go through two steps, so the host work can run in another thread while the model encodes
    another batch: :meth:`prepare` (normalise, tokenise, move to the device) and :meth:`encode_prepared` (the
    forward passes). :meth:`encode` is both at once.
    """

    def prepare(self, texts: Sequence[str]) -> PreparedTexts:
        """The model's ready inputs for ``texts``: everything before the forward passes."""
        ...

    def encode_prepared(self, prepared: PreparedTexts) -> torch.Tensor:
        """float32 ``[len(texts), dim]`` on the CPU, one row per prepared text, in input order."""
        ...

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """:meth:`encode_prepared` of :meth:`prepare`."""
        ...


@dataclass
class PreparedTexts:
    """Texts ready for a text model: per forward pass, the input rows it holds (indices into the texts) and the
    model's inputs (its own format, such as token tensors)."""

    count: int
    passes: list[tuple[list[int], Any]] = field(default_factory=list)


@runtime_checkable
class ImageEncoder(Encoder, Protocol):
    """Encodes images; decoding is a separate step so it can run elsewhere (threads, the GPU)."""

    def preprocess(self, data: bytes, limits: ImageLimits, declared_type: str | None = None) -> torch.Tensor:
        """Encoded image bytes -> the model's input ``[3, H, W]``; raises ``DecodeError`` with a reason code.

        ``declared_type``: the content type the post claims; one that disagrees with the bytes is refused.
        """
        ...

    def preprocess_many(
        self, images: Sequence[tuple[bytes, str | None]], limits: ImageLimits
    ) -> list[torch.Tensor | DecodeError]:
        """:meth:`preprocess` for each ``(data, declared_type)``, in order, with each failure in its own slot, so
        one bad image does not cost its neighbours; a GPU encoder decodes the whole list in one batched call."""
        ...

    def encode(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Preprocessed images -> float32 ``[N, dim]`` pooled features on the CPU, in input order."""
        ...

    def encode_bytes(self, images: Sequence[bytes], limits: ImageLimits) -> torch.Tensor:
        """:meth:`preprocess` then :meth:`encode`; the first image that cannot be decoded raises."""
        ...


def flatten_images(posts: Sequence[Sequence[T]]) -> tuple[list[T], list[int]]:
    """Flatten per-post image lists into one batch, with the index of the post each image came from.

    Each image keeps its own row (and so its own score downstream): one bad image among benign ones is not
    averaged away. ``flatten_images([[a, b], [], [c]]) == ([a, b, c], [0, 0, 2])``.
    """
    items: list[T] = []
    owners: list[int] = []
    for post_index, images in enumerate(posts):
        items.extend(images)
        owners.extend([post_index] * len(images))
    return items, owners


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when torch sees a GPU, else CPU; asking for CUDA without one is a configuration error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} was asked for but torch sees no CUDA device; set MODERATION_DEVICE=cpu or auto"
        )
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device {device!r} is not a torch device; use auto, cpu or cuda") from exc


def set_threads(threads: int) -> None:
    """Set torch's intra-op CPU threads (process-wide); 0 keeps torch's default."""
    if threads < 0:
        raise ConfigError(f"threads must be 0 (torch's default) or more, not {threads}")
    if threads:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def inference_context(device: torch.device) -> Iterator[None]:
    """No autograd, and bf16 autocast on CUDA (CPU stays float32 so results are exact and batch-invariant)."""
    with torch.inference_mode():
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield


def weights_digest(paths: Iterable[Path], length: int = 12) -> str:
    """sha256 prefix over the bytes of ``paths`` (in the given order): the weights part of a ``version``."""
    digest = hashlib.sha256()
    count = 0
    for path in paths:
        count += 1
        try:
            with path.open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
        except OSError as exc:
            raise ModelError(f"cannot read weights file {path}: {exc}; check the path and its permissions") from exc
    if count == 0:
        raise ModelError("no weights file to fingerprint; the model folder holds no weights")
    return digest.hexdigest()[:length]


def bucket_size(n: int, step: int = 0) -> int:
    """The size a batch of ``n`` items is padded to on CUDA, so kernels are set up for a few shapes only: the next
    power of two; with ``step``, above ``step`` items the next multiple of ``step`` when that is smaller (154
    images pad to 160 instead of 256, for a few more shapes to warm up)."""
    power = 1 << max(0, (n - 1).bit_length())
    if step and n > step:
        return min(power, -(-n // step) * step)
    return power


def bucket_sizes(batch_size: int, step: int = 0) -> list[int]:
    """Every size a batch of at most ``batch_size`` items pads to (:func:`bucket_size`), smallest first."""
    return sorted({bucket_size(n, step) for n in range(1, batch_size + 1)})


def check_batch_size(batch_size: int) -> int:
    """Validate the ``batch_size`` option of an encoder."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, not {batch_size}")
    return batch_size
