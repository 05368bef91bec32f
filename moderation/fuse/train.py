"""Training of a fusion head on embedded posts, then Platt calibration on validation per availability subset.

One trainer serves the fusion model and every baseline; they differ only in :class:`TrainConfig` flags
(:func:`baseline_config`): which modalities the head reads, whether modality dropout runs, whether missing inputs
are zero-filled (naive fusion) and whether training keeps only complete posts.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.nn import functional
from tqdm import tqdm

from moderation.errors import ConfigError
from moderation.fuse.calibration import apply_platt, fit_platt
from moderation.fuse.heads import FusionHead, LateFusionHead, create_fusion_head
from moderation.fuse.inputs import AVAILABILITY_NAMES, BOTH, IMAGE_ONLY, NONE, TEXT_ONLY, LabeledInput
from moderation.fuse.model import EncoderRef, FusionModel
from moderation.taxonomy import Signal

# Probability of each availability (none, text only, image only, both) that a complete post is cut to while training.
DEFAULT_MODALITY_DROPOUT = (0.05, 0.2, 0.2, 0.55)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (stored in the model's config.json)."""

    head: str = "masked-late-fusion"
    hidden: int = 128
    dropout: float = 0.3
    modalities: tuple[str, ...] = ("text", "image")
    interaction: bool = True
    zero_fill: bool = False
    input_norm: str = "standard-layer"
    modality_dropout: tuple[float, float, float, float] | None = DEFAULT_MODALITY_DROPOUT
    complete_only: bool = False
    epochs: int = 80
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    patience: int = 12
    seed: int = 0

    def __post_init__(self) -> None:
        if self.modality_dropout is not None and not math.isclose(sum(self.modality_dropout), 1.0):
            raise ConfigError(f"modality_dropout must sum to 1 (none, text, image, both): {self.modality_dropout}")


BASELINES = ("fusion", "text-only", "image-only", "naive-fusion")


def baseline_config(kind: str, base: TrainConfig) -> TrainConfig:
    """The training config of the fusion model (``fusion``) or of one of its baselines, from the same base."""
    if kind == "fusion":
        return base
    if kind == "text-only":
        return replace(base, modalities=("text",), modality_dropout=None)
    if kind == "image-only":
        return replace(base, modalities=("image",), modality_dropout=None)
    if kind == "naive-fusion":
        return replace(base, zero_fill=True, modality_dropout=None, complete_only=True)
    raise ConfigError(f"unknown baseline {kind!r}: choose from {', '.join(BASELINES)}")


def _masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    known = ~torch.isnan(labels)
    if not bool(known.any()):
        return logits.sum() * 0.0
    return functional.binary_cross_entropy_with_logits(logits[known], labels[known])


def _dropped(batch: LabeledInput, probabilities: tuple[float, ...], generator: torch.Generator) -> LabeledInput:
    """Modality dropout: each complete post is cut to an availability drawn from ``probabilities``; a post with one
    modality keeps it unless the draw is "none"."""
    size = batch.inputs.batch_size
    draw = torch.multinomial(torch.tensor(probabilities), size, replacement=True, generator=generator)
    has_text, has_image = batch.inputs.has_text(), batch.inputs.has_image()
    complete = has_text & has_image
    drop_text = (draw == NONE) | (complete & (draw == IMAGE_ONLY))
    drop_image = (draw == NONE) | (complete & (draw == TEXT_ONLY))
    return batch.drop(drop_text, drop_image)


def _validation_views(val: LabeledInput, config: TrainConfig) -> list[tuple[float, LabeledInput]]:
    """The validation set as the model will meet it, with a weight per view for the early-stopping loss."""
    if config.modality_dropout is None:
        return [(1.0, val)]
    return [(p, val.as_availability(code)) for code, p in enumerate(config.modality_dropout) if p > 0]


def _platt_table(parts: np.ndarray, labels: np.ndarray, categories: tuple[str, ...]) -> dict[str, list[float]]:
    """``[w_text, w_image, w_interaction, b]`` per category, fitted on the rows with a known label."""
    table = {}
    for column, category in enumerate(categories):
        known = ~np.isnan(labels[:, column])
        weights, bias = fit_platt(parts[known, column], labels[known, column])
        table[category] = [*weights, bias]
    return table


def _calibrated_loss(head: FusionHead, views: list[tuple[float, LabeledInput]]) -> float:
    """Weighted validation log-loss after Platt calibration per view and availability: the selection criterion.

    Calibration runs after training anyway, so selecting on raw logits would punish epochs whose only fault is
    overconfidence (the text branch gets there within a few epochs, long before the image branch stops learning).
    """
    head.eval()
    total = 0.0
    with torch.inference_mode():
        for weight, view in views:
            output = head.run(view.inputs)
            parts, labels = output.parts().double().numpy(), view.labels.double().numpy()
            availability = output.availability.numpy()
            losses = []
            for code in np.unique(availability):
                rows = availability == code
                table = _platt_table(parts[rows], labels[rows], view.categories)
                for column, category in enumerate(view.categories):
                    known = ~np.isnan(labels[rows, column])
                    *slopes, bias = table[category]
                    p = np.clip(apply_platt(parts[rows][known, column], slopes, bias), 1e-7, 1 - 1e-7)
                    y = labels[rows][known, column]
                    losses.append(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
            total += weight * float(np.concatenate(losses).mean())
    return total


def fit_head(train: LabeledInput, val: LabeledInput, config: TrainConfig, *, progress: bool = True) -> FusionHead:
    """Train a head with AdamW and early stopping on the calibrated validation loss; deterministic for a seed."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    if config.complete_only:
        complete = train.inputs.has_text() & train.inputs.has_image()
        train = train.select(complete.nonzero().flatten())
        val = val.select((val.inputs.has_text() & val.inputs.has_image()).nonzero().flatten())
    if train.inputs.batch_size == 0:
        raise ConfigError("no training posts left for this configuration (complete posts needed for naive fusion)")
    head = create_fusion_head(
        config.head,
        text_dim=train.inputs.text.shape[1] if train.inputs.text is not None else 1,
        image_dim=train.inputs.image_emb.shape[1] if train.inputs.image_emb.dim() == 2 else 1,
        num_categories=len(train.categories),
        hidden=config.hidden,
        dropout=config.dropout,
        modalities=config.modalities,
        interaction=config.interaction,
        zero_fill=config.zero_fill,
        input_norm=config.input_norm,
    )
    if isinstance(head, LateFusionHead):
        head.fit_input_statistics(train.inputs)
    optimiser = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    views = _validation_views(val, config)
    best_loss, best_state, stale = math.inf, copy.deepcopy(head.state_dict()), 0
    bar = tqdm(range(config.epochs), desc=f"train {'+'.join(config.modalities)}", disable=not progress, leave=False)
    for _epoch in bar:
        head.train()
        order = torch.randperm(train.inputs.batch_size, generator=generator)
        for start in range(0, order.numel(), config.batch_size):
            batch = train.select(order[start : start + config.batch_size])
            if config.modality_dropout is not None:
                batch = _dropped(batch, config.modality_dropout, generator)
            loss = _masked_bce(head.run(batch.inputs).logits, batch.labels)
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
        val_loss = _calibrated_loss(head, views)
        bar.set_postfix(val_loss=f"{val_loss:.4f}")
        if val_loss < best_loss - 1e-5:
            best_loss, best_state, stale = val_loss, copy.deepcopy(head.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    head.load_state_dict(best_state)
    return head.eval()


def fit_calibration(head: FusionHead, val: LabeledInput) -> dict[str, dict[str, list[float]]]:
    """Platt parameters per availability subset and category, from the validation posts seen in that subset.

    Each validation post is shown to the head cut down to each availability; only the rows for which the head
    reports that availability are used (a naive head reports every post as complete, so it is calibrated on
    complete posts only, as it was trained).
    """
    calibration: dict[str, dict[str, list[float]]] = {}
    for code in (NONE, TEXT_ONLY, IMAGE_ONLY, BOTH):
        view = val.as_availability(code)
        head.eval()
        with torch.inference_mode():
            output = head.run(view.inputs)
        rows = (output.availability == code).numpy()
        if not rows.any():
            continue
        parts, labels = output.parts().double().numpy()[rows], view.labels.double().numpy()[rows]
        calibration[AVAILABILITY_NAMES[code]] = _platt_table(parts, labels, val.categories)
    return calibration


def train_model(
    train: LabeledInput,
    val: LabeledInput,
    config: TrainConfig,
    *,
    text_encoder: EncoderRef,
    image_encoder: EncoderRef,
    categories: tuple[str, ...] | None = None,
    signal: dict[str, Signal] | None = None,
    metadata: dict[str, Any] | None = None,
    progress: bool = True,
) -> FusionModel:
    """Train, calibrate and wrap a model; ``categories`` may list more than the labelled ones (they score 0)."""
    head = fit_head(train, val, config, progress=progress)
    all_categories = categories or train.categories
    return FusionModel(
        head,
        head_name=config.head,
        head_categories=train.categories,
        categories=all_categories,
        signal=signal or dict.fromkeys(all_categories, "unvalidated"),
        text_encoder=text_encoder,
        image_encoder=image_encoder,
        calibration=fit_calibration(head, val),
        training={"config": asdict(config), **(metadata or {})},
    )
