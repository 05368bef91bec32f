"""One trainer for fusion and baselines, deterministic; the missing-modality protocol; the report and its plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from moderation.errors import ConfigError
from moderation.fuse.evaluate import (
    FUSION,
    IMAGE_BASELINE,
    NAIVE,
    TEXT_BASELINE,
    EvalResult,
    Evaluator,
    Scores,
    _missing_protocol,
    missing_protocol,
)
from moderation.fuse.model import EncoderRef, FusionModel
from moderation.fuse.report import acceptance_checks, write_report
from moderation.fuse.train import BASELINES, TrainConfig, baseline_config, fit_head, train_model
from tests.unit.fuse.conftest import CATEGORIES, IMAGE_DIM, TEXT_DIM, synthetic_posts

FAST = TrainConfig(epochs=15, hidden=16, seed=5)


def _train(kind: str) -> FusionModel:
    return train_model(
        synthetic_posts(600, seed=21),
        synthetic_posts(300, seed=22),
        baseline_config(kind, FAST),
        text_encoder=EncoderRef("t", "1", TEXT_DIM),
        image_encoder=EncoderRef("i", "1", IMAGE_DIM),
        progress=False,
    )


def test_baselines_are_flags_of_one_config() -> None:
    assert baseline_config("text-only", FAST).modalities == ("text",)
    assert baseline_config("image-only", FAST).modality_dropout is None
    naive = baseline_config("naive-fusion", FAST)
    assert naive.zero_fill and naive.complete_only and naive.modality_dropout is None
    assert baseline_config("fusion", FAST) == FAST
    with pytest.raises(ConfigError, match="naive-fusion"):
        baseline_config("nope", FAST)
    assert set(BASELINES) == {"fusion", "text-only", "image-only", "naive-fusion"}


def test_training_is_deterministic() -> None:
    train, val = synthetic_posts(300, seed=1), synthetic_posts(100, seed=2)
    first = fit_head(train, val, FAST, progress=False).state_dict()
    second = fit_head(train, val, FAST, progress=False).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_missing_protocol_drops_the_requested_share() -> None:
    data = synthetic_posts(2000, seed=3)
    degraded, lost_text, lost_image = missing_protocol(data, 0.7, seed=0)
    lost = lost_text | lost_image
    assert abs(float(lost.float().mean()) - 0.7) < 0.03 and not bool((lost_text & lost_image).any())
    assert not bool(degraded.inputs.has_text()[lost_text].any())
    assert not bool(degraded.inputs.has_image()[lost_image].any())
    assert bool(degraded.inputs.has_text()[lost_image].all())


def test_naive_fusion_reads_zeros_where_fusion_masks() -> None:
    naive, fusion = _train("naive-fusion"), _train("fusion")
    text_only = synthetic_posts(5, seed=4).as_availability(1).inputs
    assert naive.logits(text_only).availability.tolist() == [3] * 5  # zero-filled: treated as complete
    assert fusion.logits(text_only).availability.tolist() == [1] * 5


def test_report_states_every_acceptance_point(tmp_path: Path) -> None:
    test = synthetic_posts(400, seed=8)
    models = {name: _train(name) for name in (FUSION, TEXT_BASELINE, IMAGE_BASELINE, NAIVE)}
    result = EvalResult("synthetic", "v1", CATEGORIES, test.inputs.batch_size)
    result.info = {
        **{"test_file": "t", "train_file": "a", "val_file": "b", "train_size": 600, "val_size": 300},
        **{"unique_texts": 400, "unique_photos": 400, "resamples": 50, "seed": 0, "missing_rate": 0.7},
    }
    evaluator = Evaluator(result, resamples=50, seed=0)
    for code, view in ((3, "both"), (1, "text only"), (2, "image only")):
        data = test.as_availability(code)
        for name, model in models.items():
            evaluator.add(Scores(view, name, model.predict_proba(data.inputs), data.labels.double().numpy()))
    _missing_protocol(evaluator, models, test, CATEGORIES, 0.7, 0)
    checks = acceptance_checks(result)
    names = " ".join(c.name for c in checks)
    assert "combination_decided" in names and "70%-missing" in names and "ECE" in names
    report = write_report(result, tmp_path, "moderation eval --unit")
    text = report.read_text()
    assert "## Acceptance" in text and "## 70%-missing protocol" in text
    for png in ("synthetic-roc.png", "synthetic-reliability.png"):
        assert 0 < (tmp_path / png).stat().st_size < 200_000
    assert np.isfinite([r.ece for r in result.rows]).all()
