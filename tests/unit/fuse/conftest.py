"""Small synthetic embedded posts whose labels mimic the proxy dataset: text-decided, image-decided and XOR."""

from __future__ import annotations

import pytest
import torch

from moderation.fuse.inputs import FusionInput, LabeledInput
from moderation.fuse.model import EncoderRef, FusionModel
from moderation.fuse.train import TrainConfig, train_model

TEXT_DIM, IMAGE_DIM = 12, 8
CATEGORIES = ("text_decided", "image_decided", "combination_decided")


def synthetic_posts(count: int, seed: int, images_per_post: int = 1) -> LabeledInput:
    """``count`` complete posts: the sign of coordinate 0 of the text and of every image's coordinate 0 decide."""
    generator = torch.Generator().manual_seed(seed)
    text_label = torch.randint(0, 2, (count,), generator=generator)
    image_label = torch.randint(0, 2, (count,), generator=generator)
    text = torch.randn(count, TEXT_DIM, generator=generator)
    text[:, 0] = (text_label * 2 - 1) * (1.0 + text[:, 0].abs())
    index = torch.arange(count).repeat_interleave(images_per_post)
    images = torch.randn(index.numel(), IMAGE_DIM, generator=generator)
    # A defect post has exactly one defect image (its first); the others look nominal.
    first = torch.ones_like(index, dtype=torch.bool)
    first[1:] = index[1:] != index[:-1]
    defect = image_label[index].bool() & first
    images[:, 0] = torch.where(defect, 1.0, -1.0) * (1.0 + images[:, 0].abs())
    labels = torch.stack([text_label, image_label, text_label ^ image_label], dim=1).float()
    inputs = FusionInput(text, torch.ones(count, dtype=torch.bool), images, index)
    return LabeledInput(inputs, labels, CATEGORIES, tuple(f"p{i}" for i in range(count)))


@pytest.fixture(scope="session")
def trained_model() -> FusionModel:
    """A fusion model trained in a few seconds on synthetic posts."""
    config = TrainConfig(epochs=40, hidden=32, seed=3)
    return train_model(
        synthetic_posts(1200, seed=1),
        synthetic_posts(400, seed=2),
        config,
        text_encoder=EncoderRef("synthetic-text", "1", TEXT_DIM),
        image_encoder=EncoderRef("synthetic-image", "1", IMAGE_DIM),
        categories=(*CATEGORIES, "unmodelled"),
        progress=False,
    )
