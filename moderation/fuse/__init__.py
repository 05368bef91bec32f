"""Late fusion of text and image embeddings into calibrated per-category scores, with missing modalities masked.

Public surface::

    from moderation.fuse import load_fusion_model, FusionInput
    model = load_fusion_model("models/default")
    outputs = model.predict(FusionInput(text, text_present, image_emb, image_post_index))

Heads are registered by name (:func:`register_fusion_head`, :func:`create_fusion_head`). The names are imported
on first use, so ``moderation.fuse.cli`` (loaded by every ``moderation`` command) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moderation.fuse.heads import FusionHead, create_fusion_head, fusion_head_names, register_fusion_head
    from moderation.fuse.inputs import FusionInput
    from moderation.fuse.model import FusionModel, FusionOutput, load_fusion_model

_HOMES = {
    "FusionHead": "moderation.fuse.heads",
    "create_fusion_head": "moderation.fuse.heads",
    "fusion_head_names": "moderation.fuse.heads",
    "register_fusion_head": "moderation.fuse.heads",
    "FusionInput": "moderation.fuse.inputs",
    "FusionModel": "moderation.fuse.model",
    "FusionOutput": "moderation.fuse.model",
    "load_fusion_model": "moderation.fuse.model",
}

__all__ = [
    "FusionHead",
    "FusionInput",
    "FusionModel",
    "FusionOutput",
    "create_fusion_head",
    "fusion_head_names",
    "load_fusion_model",
    "register_fusion_head",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'moderation.fuse' has no attribute {name!r}")
