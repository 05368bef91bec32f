"""Encoders by name: ``create_encoder("minilm-l6")``, ``create_encoder("timm:resnet18", weights="r18.pth")``.

Besides registered names, two forms are resolved on the fly: ``timm:<model name>`` (an image encoder for any timm
network, with ``weights=<local file>``) and the path of a sentence-transformers folder (a text encoder). The
built-in names are registered on first use, so importing this module loads no model library.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moderation.encode.base import ImageEncoder, TextEncoder
from moderation.errors import ConfigError, RegistryError
from moderation.types import Modality

if TYPE_CHECKING:
    from moderation.settings import Settings

log = logging.getLogger(__name__)

EncoderFactory = Callable[..., TextEncoder | ImageEncoder]

TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class _Entry:
    modality: Modality
    factory: EncoderFactory


_REGISTRY: dict[str, _Entry] = {}
_builtins_loaded = False


def register_encoder(name: str, factory: EncoderFactory, *, modality: Modality) -> None:
    """Make ``create_encoder(name, **cfg)`` call ``factory(**cfg)``; a name can be registered only once."""
    _load_builtins()
    if name in _REGISTRY:
        raise RegistryError(f"encoder {name!r} is already registered; pick another name")
    if name.startswith(TIMM_PREFIX):
        raise RegistryError(f"encoder names starting with {TIMM_PREFIX!r} are reserved for timm models")
    _REGISTRY[name] = _Entry(modality, factory)


def list_encoders(modality: Modality | None = None) -> list[str]:
    """Registered names, sorted; only those of ``modality`` when given."""
    _load_builtins()
    return sorted(name for name, entry in _REGISTRY.items() if modality in (None, entry.modality))


def create_encoder(name: str, **cfg: Any) -> TextEncoder | ImageEncoder:
    """Build the encoder ``name`` with options ``cfg`` (``device``, ``threads``, ``batch_size``, ...).

    Unknown names raise ``RegistryError`` listing the known ones; options the encoder does not take raise
    ``ConfigError`` listing those it does.
    """
    _load_builtins()
    from moderation.encode import builtin

    entry = _REGISTRY.get(name)
    if entry is not None:
        return _call(name, entry.factory, cfg)
    if name.startswith(TIMM_PREFIX):
        return _call(name, builtin.timm_encoder, {"model_name": name.removeprefix(TIMM_PREFIX), **cfg})
    from moderation.encode.text import is_sentence_transformers_folder

    if is_sentence_transformers_folder(name):
        return _call(name, builtin.sentence_transformers_encoder, {"folder": name, **cfg})
    raise _unknown(name)


def modality_of(name: str) -> Modality:
    """The modality ``create_encoder(name)`` would give, without building anything."""
    _load_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name].modality
    if name.startswith(TIMM_PREFIX):
        return Modality.IMAGE
    from moderation.encode.text import is_sentence_transformers_folder

    if is_sentence_transformers_folder(name):
        return Modality.TEXT
    raise _unknown(name)


def create_text_encoder(name: str, **cfg: Any) -> TextEncoder:
    """:func:`create_encoder` for a text encoder; an image encoder's name is a ``RegistryError``."""
    encoder = create_encoder(name, **cfg)
    if encoder.modality is not Modality.TEXT or not isinstance(encoder, TextEncoder):
        raise RegistryError(f"{name!r} is an {encoder.modality.value} encoder; text encoders: {_names(Modality.TEXT)}")
    return encoder


def create_image_encoder(name: str, **cfg: Any) -> ImageEncoder:
    """:func:`create_encoder` for an image encoder; a text encoder's name is a ``RegistryError``."""
    encoder = create_encoder(name, **cfg)
    if encoder.modality is not Modality.IMAGE or not isinstance(encoder, ImageEncoder):
        raise RegistryError(f"{name!r} is a {encoder.modality.value} encoder; image encoders: {_names(Modality.IMAGE)}")
    return encoder


def _unknown(name: str) -> RegistryError:
    return RegistryError(
        f"unknown encoder {name!r}; known: {', '.join(list_encoders())}; "
        f"or '{TIMM_PREFIX}<timm model name>' with weights=<file>, or the path of a sentence-transformers folder"
    )


def _names(modality: Modality) -> str:
    return ", ".join(list_encoders(modality))


def _call(name: str, factory: EncoderFactory, cfg: dict[str, Any]) -> TextEncoder | ImageEncoder:
    signature = inspect.signature(factory)
    try:
        signature.bind(**cfg)
    except TypeError as exc:
        accepted = ", ".join(p for p in signature.parameters if p not in ("model_name", "folder"))
        raise ConfigError(f"encoder {name!r}: {exc}; its options are: {accepted}") from exc
    return factory(**cfg)


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        from moderation.encode import builtin

        for builtin_name, (modality, factory) in builtin.BUILTINS.items():
            _REGISTRY.setdefault(builtin_name, _Entry(modality, factory))


def create_settings_encoders(settings: Settings, text_name: str, image_name: str) -> tuple[TextEncoder, ImageEncoder]:
    """The text and image encoders a fusion model names, on the settings' device, torch threads and batch sizes,
    and warmed up when ``settings.warm_up`` says so: how the worker, the benchmark's limit and its baselines all
    build them, so they compare the same models."""
    device = settings.resolved_device
    text = create_text_encoder(
        text_name, device=device, threads=settings.resolved_torch_threads, batch_size=settings.resolved_text_batch_size
    )
    image = create_image_encoder(
        image_name,
        device=device,
        threads=settings.resolved_torch_threads,
        batch_size=settings.resolved_image_batch_size,
    )
    if settings.warm_up:
        started = time.perf_counter()
        text.warm_up()
        image.warm_up()
        log.info("encoders warmed up", extra={"seconds": round(time.perf_counter() - started, 2), "device": device})
    return text, image
