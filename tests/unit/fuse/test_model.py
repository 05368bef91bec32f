"""The fusion model's runtime contract: any mix of modalities, finite scores, batch independence, explanations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from moderation.errors import ConfigError, ModelError, RegistryError
from moderation.fuse import FusionInput, FusionModel, create_fusion_head, load_fusion_model
from moderation.types import Modality
from tests.unit.fuse.conftest import CATEGORIES, IMAGE_DIM, TEXT_DIM, synthetic_posts


def _mixed_batch() -> FusionInput:
    """Posts 0: text+2 images, 1: text only, 2: one image, 3: neither, 4: text+1 image (images out of post order)."""
    generator = torch.Generator().manual_seed(7)
    text = torch.randn(5, TEXT_DIM, generator=generator)
    text[2] = float("nan")  # absent rows are never read, whatever they hold
    return FusionInput(
        text=text,
        text_present=torch.tensor([True, True, False, False, True]),
        image_emb=torch.randn(4, IMAGE_DIM, generator=generator),
        image_post_index=torch.tensor([0, 2, 0, 4]),
    )


def test_every_mix_of_modalities_gives_finite_scores(trained_model: FusionModel) -> None:
    outputs = trained_model.predict(_mixed_batch())
    assert len(outputs) == 5
    for output in outputs:
        assert set(output.scores) == set(trained_model.categories)
        assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in output.scores.values())
    assert outputs[1].driven_by["text_decided"] == (Modality.TEXT, None)
    assert outputs[2].driven_by["image_decided"] == (Modality.IMAGE, 0)
    assert outputs[3].driven_by["text_decided"] == (None, None)
    assert outputs[0].driven_by["unmodelled"] == (None, None) and outputs[0].scores["unmodelled"] == 0.0


def test_batch_without_text_rows_or_images() -> None:
    model_input = FusionInput(None, torch.zeros(3, dtype=torch.bool), torch.zeros(0, IMAGE_DIM), torch.zeros(0).long())
    assert model_input.availability().tolist() == [0, 0, 0]


def test_stacked_batches_keep_each_post_with_its_own_images() -> None:
    batch = _mixed_batch()
    tail = batch.select(torch.tensor([4, 0]))
    stacked = FusionInput.stack([batch, tail])
    assert stacked.batch_size == 7
    assert stacked.availability().tolist() == [*batch.availability().tolist(), 3, 3]
    again = stacked.select(torch.tensor([5, 6]))
    assert torch.equal(again.image_emb, tail.image_emb)
    assert torch.equal(again.image_post_index, tail.image_post_index)
    no_text = FusionInput(None, torch.zeros(1, dtype=torch.bool), torch.zeros(0, IMAGE_DIM), torch.zeros(0).long())
    with pytest.raises(ConfigError, match="text rows"):
        FusionInput.stack([batch, no_text])


def test_scores_do_not_depend_on_batch_composition(trained_model: FusionModel) -> None:
    batch = _mixed_batch()
    together = trained_model.predict(batch)
    for post in range(batch.batch_size):
        alone = trained_model.predict(batch.select(torch.tensor([post])))[0]
        for category, score in together[post].scores.items():
            assert abs(alone.scores[category] - score) <= 1e-5
        assert alone.driven_by == together[post].driven_by
    reversed_order = trained_model.predict(batch.select(torch.arange(batch.batch_size - 1, -1, -1)))
    for post, output in enumerate(reversed(reversed_order)):
        assert all(abs(output.scores[c] - together[post].scores[c]) <= 1e-5 for c in output.scores)


def test_combination_label_needs_the_interaction_path(trained_model: FusionModel) -> None:
    test = synthetic_posts(600, seed=11)
    probs = trained_model.predict_proba(test.inputs)
    labels = test.labels.numpy()
    aurocs = [roc_auc_score(labels[:, c], probs[:, c]) for c in range(3)]
    assert min(aurocs) > 0.9, aurocs
    text_only = trained_model.predict_proba(test.as_availability(1).inputs)
    assert roc_auc_score(labels[:, 0], text_only[:, 0]) > 0.95
    assert abs(roc_auc_score(labels[:, 2], text_only[:, 2]) - 0.5) < 0.1


def test_max_pooling_keeps_the_deciding_image(trained_model: FusionModel) -> None:
    posts = synthetic_posts(50, seed=5, images_per_post=3)
    defect_posts = posts.labels[:, 1].bool() & ~posts.labels[:, 0].bool()
    outputs = trained_model.predict(posts.as_availability(2).inputs)
    for output, defect in zip(outputs, defect_posts.tolist(), strict=True):
        if defect and output.scores["image_decided"] > 0.5:
            assert output.driven_by["image_decided"] == (Modality.IMAGE, 0)


def test_save_and_load_round_trip(trained_model: FusionModel, tmp_path: Path) -> None:
    version = trained_model.save(tmp_path / "model", name="unit")
    loaded = load_fusion_model(tmp_path / "model")
    assert loaded.version == version and version.startswith("unit-")
    assert loaded.categories == trained_model.categories
    assert loaded.text_encoder == "synthetic-text" and loaded.image_encoder == "synthetic-image"
    batch = _mixed_batch()
    np.testing.assert_allclose(loaded.predict_proba(batch), trained_model.predict_proba(batch), atol=1e-7)


def test_missing_model_says_how_to_build_one(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="moderation build-default-model"):
        load_fusion_model(tmp_path / "nothing")


def test_wrong_embedding_width_is_a_model_error(trained_model: FusionModel) -> None:
    batch = FusionInput(
        torch.zeros(1, TEXT_DIM + 1), torch.ones(1, dtype=torch.bool), torch.zeros(0, 1), torch.zeros(0).long()
    )
    with pytest.raises(ModelError, match="dimensions"):
        trained_model.predict(batch)


def test_unknown_head_lists_registered_names() -> None:
    with pytest.raises(RegistryError, match="masked-late-fusion"):
        create_fusion_head("no-such-head")


def test_explanations_name_the_modality_that_decides(trained_model: FusionModel) -> None:
    posts = synthetic_posts(200, seed=13, images_per_post=2)
    outputs = trained_model.predict(posts.inputs)
    drivers = {c: [o.driven_by[c][0] for o in outputs] for c in CATEGORIES}
    assert drivers["text_decided"].count(Modality.TEXT) > 180
    assert drivers["image_decided"].count(Modality.IMAGE) > 160
    assert drivers["combination_decided"].count("both") > 160
    for output, label in zip(outputs, posts.labels[:, 1].tolist(), strict=True):
        modality, image = output.driven_by["image_decided"]
        if modality == Modality.IMAGE and label == 1 and output.scores["image_decided"] > 0.5:
            assert image == 0  # the defect image of a synthetic post is its first
