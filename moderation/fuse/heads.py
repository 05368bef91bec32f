"""Fusion heads: from per-post embeddings to per-category logits, with a registry like timm's ``create_model``.

The one head shipped, ``masked-late-fusion``, works on whatever modalities a post has:

* a text branch and an image branch, each a projection and a per-category linear head;
* an interaction path over the projected text and image (their concatenation and element-wise product through a
  small MLP), computed per image and added only when the post has both: it is what can learn a label that only the
  combination decides (an XOR of the two), which no sum of per-modality logits can express;
* several images per post: per-image scores (image logit plus interaction) are pooled by max, and the image that
  won is kept, so a verdict can point at the image that drove it;
* masks, not zero vectors: a missing modality contributes nothing, and a learned bias per availability
  (none / text / image / both) stands in for it, the "missing-modality token" in logit space.

The same class, with ``zero_fill=True``, is the naive-fusion baseline: missing text or images become zero vectors
that flow through the branches as if they were data, and one bias serves every post.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from moderation.errors import RegistryError
from moderation.fuse.inputs import BOTH, FusionInput

MODALITIES = ("text", "image")


@dataclass(frozen=True)
class HeadOutput:
    """Logits of a batch and the parts they are made of, for explanations (all ``[B, C]``)."""

    logits: torch.Tensor
    text_part: torch.Tensor
    image_part: torch.Tensor
    interaction_part: torch.Tensor
    deciding_image: torch.Tensor  # index into the batch's images, -1 when the post has none
    availability: torch.Tensor  # [B], the availability code the bias and calibration used

    def parts(self) -> torch.Tensor:
        """``[B, C, 3]``: the text, image and interaction parts side by side (the bias is constant per subset)."""
        return torch.stack([self.text_part, self.image_part, self.interaction_part], dim=2)


class FusionHead(nn.Module):
    """Base of registered heads: a module with a JSON-able ``config`` that rebuilds it through the registry."""

    config: dict[str, Any]

    def run(self, batch: FusionInput) -> HeadOutput:
        """``self(batch)`` with its type: per-category logits of the batch and their parts."""
        output: HeadOutput = self(batch)
        return output


_HEADS: dict[str, Callable[..., FusionHead]] = {}


def register_fusion_head(name: str) -> Callable[[Callable[..., FusionHead]], Callable[..., FusionHead]]:
    """Decorator: register a head factory under ``name``; a second registration of a name is an error."""

    def decorate(factory: Callable[..., FusionHead]) -> Callable[..., FusionHead]:
        if name in _HEADS:
            raise RegistryError(f"fusion head {name!r} is already registered")
        _HEADS[name] = factory
        return factory

    return decorate


def fusion_head_names() -> tuple[str, ...]:
    return tuple(sorted(_HEADS))


def create_fusion_head(name: str, **cfg: Any) -> FusionHead:
    """Build the head registered as ``name`` from its config; unknown names raise ``RegistryError``."""
    try:
        factory = _HEADS[name]
    except KeyError:
        raise RegistryError(
            f"unknown fusion head {name!r}: registered heads are {', '.join(fusion_head_names())}"
        ) from None
    return factory(**cfg)


class Standardize(nn.Module):
    """``(x - mean) / std`` with the training set's per-feature statistics (buffers saved with the weights).

    Features that never vary in training (dead units of an image backbone) get scale 0, and every spread is floored
    at 5% of the mean spread: a feature that barely varied in training must not turn a small deviation at test
    time into a huge input.
    """

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def fit(self, rows: torch.Tensor) -> None:
        if rows.shape[0] > 1:
            std = rows.std(dim=0)
            floor = 0.05 * float(std.mean())
            self.mean.copy_(rows.mean(dim=0))
            self.scale.copy_(torch.where(std > 1e-6, 1.0 / std.clamp_min(max(floor, 1e-6)), 0.0))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return (rows - self.mean) * self.scale


# "standard-layer" (the default): per-feature standardisation with training statistics, then LayerNorm, so a
# zero-filled input lands far from the data instead of on the LayerNorm's learned bias. "layer": LayerNorm alone
# (the ablation of docs/MODEL_CARD.md).
INPUT_NORMS = ("layer", "standard-layer")


def _projection(in_dim: int, hidden: int, dropout: float, norm: str) -> nn.Sequential:
    first: list[nn.Module] = [Standardize(in_dim)] if norm == "standard-layer" else []
    return nn.Sequential(*first, nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout))


class LateFusionHead(FusionHead):
    """Per-modality heads plus a both-only interaction path, fused over the modalities present (see module doc)."""

    def __init__(
        self,
        *,
        text_dim: int,
        image_dim: int,
        num_categories: int,
        hidden: int = 128,
        dropout: float = 0.1,
        modalities: tuple[str, ...] | list[str] = MODALITIES,
        interaction: bool = True,
        zero_fill: bool = False,
        input_norm: str = "standard-layer",
    ) -> None:
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise RegistryError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        unknown = set(modalities) - set(MODALITIES)
        if unknown or not modalities:
            raise RegistryError(f"modalities must be a non-empty subset of {MODALITIES}, got {list(modalities)}")
        self.use_text = "text" in modalities
        self.use_image = "image" in modalities
        self.use_interaction = interaction and self.use_text and self.use_image
        self.zero_fill = zero_fill
        self.config: dict[str, Any] = {
            "text_dim": text_dim,
            "image_dim": image_dim,
            "num_categories": num_categories,
            "hidden": hidden,
            "dropout": dropout,
            "modalities": list(modalities),
            "interaction": self.use_interaction,
            "zero_fill": zero_fill,
            "input_norm": input_norm,
        }
        self.text_proj = _projection(text_dim, hidden, dropout, input_norm) if self.use_text else None
        self.text_head = nn.Linear(hidden, num_categories) if self.use_text else None
        self.image_proj = _projection(image_dim, hidden, dropout, input_norm) if self.use_image else None
        self.image_head = nn.Linear(hidden, num_categories) if self.use_image else None
        self.interaction = (
            nn.Sequential(
                nn.Linear(3 * hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_categories)
            )
            if self.use_interaction
            else None
        )
        # One bias per availability (none, text, image, both); the naive head only ever uses the "both" row.
        self.bias = nn.Parameter(torch.zeros(4, num_categories))

    def fit_input_statistics(self, batch: FusionInput) -> None:
        """Set the standardisation of each branch from the training posts that have that modality."""
        for projection, rows in (
            (self.text_proj, batch.text[batch.has_text()] if batch.text is not None else None),
            (self.image_proj, batch.image_emb),
        ):
            if projection is not None and rows is not None and isinstance(projection[0], Standardize):
                projection[0].fit(rows)

    def _prepared(self, batch: FusionInput) -> FusionInput:
        """The batch as this head sees it: unused modalities dropped; with ``zero_fill``, gaps filled with zeros."""
        text_present = batch.has_text() if self.use_text else torch.zeros_like(batch.text_present)
        image_emb, image_index = batch.image_emb, batch.image_post_index
        if not self.use_image:
            image_emb, image_index = image_emb[:0], image_index[:0]
        text = batch.text
        if self.zero_fill:
            dim = self.config["text_dim"]
            text = torch.zeros(batch.batch_size, dim) if text is None else torch.where(text_present[:, None], text, 0.0)
            text_present = torch.ones_like(text_present)
            if self.use_image:
                missing = (~batch.has_image()).nonzero().flatten()
                filler = torch.zeros(missing.numel(), self.config["image_dim"], dtype=image_emb.dtype)
                image_emb = torch.cat([image_emb, filler])
                image_index = torch.cat([image_index, missing])
        return FusionInput(text=text, text_present=text_present, image_emb=image_emb, image_post_index=image_index)

    def forward(self, batch: FusionInput) -> HeadOutput:
        batch = self._prepared(batch)
        size, categories = batch.batch_size, self.bias.shape[1]
        zeros = torch.zeros(size, categories)
        has_text = batch.has_text()
        text_part, hidden_text = zeros, None
        if self.text_proj is not None and self.text_head is not None and batch.text is not None:
            # Absent rows are replaced before the projection so that whatever they hold (even NaN) cannot leak.
            safe = torch.where(has_text[:, None], batch.text, 0.0)
            hidden_text = self.text_proj(safe)
            text_part = self.text_head(hidden_text) * has_text[:, None]
        image_part, interaction_part = zeros, zeros
        deciding = torch.full((size, categories), -1, dtype=torch.long)
        if self.image_proj is not None and self.image_head is not None and batch.image_post_index.numel():
            image_part, interaction_part, deciding = self._pool_images(batch, hidden_text, has_text)
        availability = batch.availability()
        if self.zero_fill:
            availability = torch.full_like(availability, BOTH)
        logits = text_part + image_part + interaction_part + self.bias[availability]
        return HeadOutput(logits, text_part, image_part, interaction_part, deciding, availability)

    def _pool_images(
        self, batch: FusionInput, hidden_text: torch.Tensor | None, has_text: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-image scores (image logit + interaction when text is present), max-pooled per post."""
        assert self.image_proj is not None and self.image_head is not None
        index = batch.image_post_index
        hidden_image = self.image_proj(batch.image_emb)
        per_image = self.image_head(hidden_image)
        per_interaction = torch.zeros_like(per_image)
        if self.interaction is not None and hidden_text is not None:
            paired = hidden_text[index]
            joint = torch.cat([paired, hidden_image, paired * hidden_image], dim=1)
            per_interaction = self.interaction(joint) * has_text[index][:, None]
        score = per_image + per_interaction
        size, categories = batch.batch_size, score.shape[1]
        expanded = index[:, None].expand(-1, categories)
        pooled = torch.zeros(size, categories).scatter_reduce(0, expanded, score, reduce="amax", include_self=False)
        # The deciding image: the first image of the post whose score equals the post's max.
        count = index.numel()
        candidate = torch.where(score == pooled[index], torch.arange(count)[:, None], count)
        deciding = torch.full((size, categories), count, dtype=torch.long)
        deciding = deciding.scatter_reduce(0, expanded, candidate, reduce="amin", include_self=True)
        has_image = deciding < count
        safe = deciding.clamp(max=count - 1)
        image_part = torch.where(has_image, per_image.gather(0, safe), 0.0)
        interaction_part = torch.where(has_image, per_interaction.gather(0, safe), 0.0)
        return image_part, interaction_part, torch.where(has_image, deciding, -1)


@register_fusion_head("masked-late-fusion")
def _masked_late_fusion(**cfg: Any) -> FusionHead:
    return LateFusionHead(**cfg)
