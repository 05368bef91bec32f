"""Evaluation of a fusion model against baselines trained on the same data, with bootstrap intervals.

Views of the test set:

* ``as given``: the posts as they are in the file;
* ``both`` / ``text only`` / ``image only``: every post cut down to that availability (only where the test set
  carries both modalities), which is where calibration is checked;
* the 70%-missing protocol: 70% of posts (fixed seed) lose one modality, text or image with equal chance; the
  posts that lost one are scored by the fusion model, by naive fusion (zero-filled), and by the baseline trained on
  the modality they kept ("remaining-modality baseline": the text-only model for posts that kept their text, the
  image-only model for posts that kept their images).

Baselines are trained here by the same trainer with flags (:func:`moderation.fuse.train.baseline_config`), from
the training and validation files recorded in the model's config.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moderation.errors import ConfigError
from moderation.fuse.embed import DEFAULT_CACHE, Encoders, dataset_name, embed_rows, read_rows
from moderation.fuse.inputs import BOTH, IMAGE_ONLY, TEXT_ONLY, LabeledInput
from moderation.fuse.metrics import (
    Estimate,
    FloatArray,
    bootstrap_weights,
    expected_calibration_error,
    weighted_auroc,
    weighted_average_precision,
)
from moderation.fuse.model import FusionModel, load_fusion_model
from moderation.fuse.train import TrainConfig, baseline_config, train_model

FUSION, TEXT_BASELINE, IMAGE_BASELINE, NAIVE = "fusion", "text-only", "image-only", "naive-fusion"
REMAINING = "remaining-modality baseline"
SUBSET_VIEWS = {BOTH: "both", TEXT_ONLY: "text only", IMAGE_ONLY: "image only"}
LOST_VIEW = "lost a modality (70%-missing)"
ALL_POSTS_VIEW = "all posts (70%-missing)"
MACRO = "macro average"
INFORMATIVE_MACRO = "macro, informative categories"


@dataclass(frozen=True)
class Scores:
    """One model's calibrated probabilities on one view of the test set, with the labels."""

    view: str
    model: str
    probs: FloatArray  # [n, C]
    labels: FloatArray  # [n, C], NaN where unknown


@dataclass(frozen=True)
class MetricRow:
    view: str
    model: str
    category: str
    auroc: Estimate
    average_precision: Estimate
    ece: float
    count: int
    positives: int


@dataclass(frozen=True)
class Difference:
    """``model_a - model_b`` AUROC on the same posts, with a paired bootstrap interval."""

    view: str
    category: str
    model_a: str
    model_b: str
    auroc: Estimate


@dataclass(frozen=True)
class SeedRun:
    """The 70%-missing comparison on the lost posts with every model retrained from one seed (macro AUROC over the
    informative categories)."""

    seed: int
    fusion: Estimate
    remaining: Estimate
    naive: Estimate
    fusion_minus_remaining: Estimate
    fusion_minus_naive: Estimate


@dataclass
class EvalResult:
    dataset: str
    model_version: str
    categories: tuple[str, ...]
    test_size: int
    rows: list[MetricRow] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    pooled_ece: dict[tuple[str, str], float] = field(default_factory=dict)
    scores: list[Scores] = field(default_factory=list)
    seed_runs: list[SeedRun] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def row(self, view: str, model: str, category: str) -> MetricRow | None:
        return next((r for r in self.rows if (r.view, r.model, r.category) == (view, model, category)), None)

    def difference(self, view: str, category: str, model_a: str, model_b: str) -> Difference | None:
        key = (view, category, model_a, model_b)
        return next((d for d in self.differences if (d.view, d.category, d.model_a, d.model_b) == key), None)


def missing_protocol(data: LabeledInput, rate: float, seed: int) -> tuple[LabeledInput, torch.Tensor, torch.Tensor]:
    """The test set after ``rate`` of its posts lost one modality (text or image, equal chance, fixed seed).

    Only posts that have both can lose one; returns the degraded set and the masks of posts that lost text and
    that lost their images.
    """
    generator = torch.Generator().manual_seed(seed)
    size = data.inputs.batch_size
    complete = data.inputs.has_text() & data.inputs.has_image()
    loses = (torch.rand(size, generator=generator) < rate) & complete
    text_goes = torch.rand(size, generator=generator) < 0.5
    lost_text, lost_image = loses & text_goes, loses & ~text_goes
    return data.drop(lost_text, lost_image), lost_text, lost_image


def _score(model: FusionModel, data: LabeledInput, categories: tuple[str, ...], view: str, name: str) -> Scores:
    columns = [model.head_categories.index(c) for c in categories]
    label_columns = [data.categories.index(c) for c in categories]
    probs = model.predict_proba(data.inputs)[:, columns]
    return Scores(view, name, probs, data.labels.double().numpy()[:, label_columns])


def _subset(data: LabeledInput, code: int) -> LabeledInput:
    """The posts that have every modality of availability ``code``, cut down to exactly those modalities."""
    cut = data.as_availability(code)
    return cut.select((cut.inputs.availability() == code).nonzero().flatten())


def _combine(parts: list[tuple[torch.Tensor, Scores]], view: str, name: str) -> Scores:
    """One model's scores assembled row by row from several models (the remaining-modality baseline)."""
    probs = np.zeros_like(parts[0][1].probs)
    for mask, scores in parts:
        probs[mask.numpy()] = scores.probs[mask.numpy()]
    return Scores(view, name, probs, parts[0][1].labels)


def _restrict(scores: Scores, mask: torch.Tensor, view: str) -> Scores:
    rows = mask.numpy()
    return Scores(view, scores.model, scores.probs[rows], scores.labels[rows])


class Evaluator:
    """Collects metric rows and paired differences over views, sharing bootstrap weights per view."""

    def __init__(self, result: EvalResult, resamples: int, seed: int) -> None:
        self.result, self.resamples, self.seed = result, resamples, seed
        self._weights: dict[int, FloatArray] = {}

    def weights(self, n: int) -> FloatArray:
        if n not in self._weights:
            self._weights[n] = bootstrap_weights(n, self.resamples, self.seed)
        return self._weights[n]

    def add(self, scores: Scores, macros: dict[str, tuple[str, ...]] | None = None) -> None:
        """Metric rows per category and per macro average (mean over a set of categories, per resample).

        ``macros`` names the averages to add (default: :data:`MACRO` over every category).
        """
        self.result.scores.append(scores)
        aurocs, aps, eces, ys = {}, {}, {}, {}
        for column, category in enumerate(self.result.categories):
            p, y, w = self._column(scores, scores, column)
            aurocs[category], aps[category] = weighted_auroc(p, y, w), weighted_average_precision(p, y, w)
            eces[category], ys[category] = expected_calibration_error(p, y), y
            self._row(scores, category, aurocs[category], aps[category], eces[category], y)
        pooled_p = np.concatenate([self._column(scores, scores, c)[0] for c in range(len(self.result.categories))])
        pooled_y = np.concatenate(list(ys.values()))
        self.result.pooled_ece[(scores.view, scores.model)] = expected_calibration_error(pooled_p, pooled_y)
        for name, members in self._macros(macros).items():
            if len({aurocs[c].size for c in members}) == 1:
                y = np.concatenate([ys[c] for c in members])
                ece = float(np.mean([eces[c] for c in members]))
                auroc = np.mean([aurocs[c] for c in members], axis=0)
                self._row(scores, name, auroc, np.mean([aps[c] for c in members], axis=0), ece, y)

    def compare(self, a: Scores, b: Scores, macros: dict[str, tuple[str, ...]] | None = None) -> None:
        """Paired AUROC differences ``a - b`` per category and per macro average."""
        deltas = {}
        for column, category in enumerate(self.result.categories):
            p_a, y, w = self._column(a, a, column)
            p_b, _, _ = self._column(b, a, column)
            deltas[category] = weighted_auroc(p_a, y, w) - weighted_auroc(p_b, y, w)
            self.result.differences.append(
                Difference(a.view, category, a.model, b.model, Estimate.from_samples(deltas[category]))
            )
        for name, members in self._macros(macros).items():
            if len({deltas[c].size for c in members}) == 1:
                macro = Estimate.from_samples(np.mean([deltas[c] for c in members], axis=0))
                self.result.differences.append(Difference(a.view, name, a.model, b.model, macro))

    def auroc(self, scores: Scores, column: int) -> Estimate:
        """AUROC of one category of ``scores``, with its interval, without recording it."""
        return Estimate.from_samples(weighted_auroc(*self._column(scores, scores, column)))

    def macro_auroc(self, scores: Scores, members: tuple[str, ...], minus: Scores | None = None) -> Estimate:
        """Mean AUROC over ``members`` (or the mean paired difference with ``minus``), without recording it."""
        samples = []
        for category in members:
            column = self.result.categories.index(category)
            p, y, w = self._column(scores, scores, column)
            sample = weighted_auroc(p, y, w)
            if minus is not None:
                sample = sample - weighted_auroc(self._column(minus, scores, column)[0], y, w)
            samples.append(sample)
        return Estimate.from_samples(np.mean(samples, axis=0))

    def _macros(self, macros: dict[str, tuple[str, ...]] | None) -> dict[str, tuple[str, ...]]:
        chosen = {MACRO: self.result.categories} if macros is None else macros
        return {name: members for name, members in chosen.items() if len(members) > 1}

    def _column(self, scores: Scores, reference: Scores, column: int) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Probabilities of ``scores`` where ``reference`` has a label, the labels, and bootstrap weights."""
        known = ~np.isnan(reference.labels[:, column])
        return scores.probs[known, column], reference.labels[known, column], self.weights(int(known.sum()))

    def _row(self, scores: Scores, category: str, auroc: FloatArray, ap: FloatArray, ece: float, y: FloatArray) -> None:
        self.result.rows.append(
            MetricRow(
                view=scores.view,
                model=scores.model,
                category=category,
                auroc=Estimate.from_samples(auroc),
                average_precision=Estimate.from_samples(ap),
                ece=ece,
                count=int(y.size),
                positives=int(y.sum()),
            )
        )


def train_baselines(
    model: FusionModel,
    train: LabeledInput,
    val: LabeledInput,
    kinds: list[str],
    progress: bool,
    seed: int | None = None,
) -> dict[str, FusionModel]:
    """The baselines (or ``fusion`` itself), trained by the model's own recipe with the baseline flags."""
    recorded = dict(model.training.get("config", {}))
    recorded = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()}
    base = TrainConfig(**recorded)
    if seed is not None:
        base = replace(base, seed=seed)
    return {
        kind: train_model(
            train,
            val,
            baseline_config(kind, base),
            text_encoder=model.text_encoder_ref,
            image_encoder=model.image_encoder_ref,
            progress=progress,
        )
        for kind in kinds
    }


def evaluate(
    model_dir: Path,
    data_path: Path,
    *,
    train_path: Path | None = None,
    val_path: Path | None = None,
    resamples: int = 1000,
    seed: int = 0,
    missing_rate: float = 0.7,
    seeds: int = 5,
    cache_root: Path = DEFAULT_CACHE,
    device: str = "cpu",
    progress: bool = True,
) -> EvalResult:
    """Score the test file with the model and its baselines under every view (see the module doc)."""
    model = load_fusion_model(model_dir)
    rows = read_rows(data_path)
    labelled = {c for row in rows for c in row.labels}
    categories = tuple(c for c in model.head_categories if c in labelled)
    if not categories:
        raise ConfigError(f"{data_path} labels none of the model's categories ({', '.join(model.head_categories)})")
    encoders = Encoders(model.text_encoder, model.image_encoder, device=device)
    _check_encoders(model, encoders)
    test = embed_rows(rows, model.head_categories, encoders, cache_root=cache_root, progress=progress)
    has_text, has_image = bool(test.inputs.has_text().any()), bool(test.inputs.has_image().any())
    kinds = [TEXT_BASELINE] if has_text else []
    kinds += [IMAGE_BASELINE] if has_image else []
    kinds += [NAIVE] if has_text and has_image else []
    data_info = model.training.get("data", {})
    train_file = train_path or (Path(data_info["train"]) if "train" in data_info else None)
    val_file = val_path or (Path(data_info["val"]) if "val" in data_info else None)
    if train_file is None or val_file is None:
        raise ConfigError("the model's config records no training data: pass --train and --val for the baselines")
    train = embed_rows(read_rows(train_file), model.head_categories, encoders, cache_root=cache_root, progress=progress)
    val = embed_rows(read_rows(val_file), model.head_categories, encoders, cache_root=cache_root, progress=progress)
    models = {FUSION: model, **train_baselines(model, train, val, kinds, progress)}

    result = EvalResult(dataset_name(data_path), model.version, categories, test.inputs.batch_size)
    result.info = _describe(rows, data_path, train_file, val_file, train, val, resamples, seed, missing_rate)
    evaluator = Evaluator(result, resamples, seed)
    views: list[tuple[str, LabeledInput]] = [("as given", test)]
    if has_text and has_image:
        views += [(SUBSET_VIEWS[code], _subset(test, code)) for code in (BOTH, TEXT_ONLY, IMAGE_ONLY)]
    for view, data in views:
        scored = {name: _score(m, data, categories, view, name) for name, m in models.items()}
        for scores in scored.values():
            evaluator.add(scores)
        for name in scored:
            if name != FUSION:
                evaluator.compare(scored[FUSION], scored[name])
    if has_text and has_image:
        informative = _missing_protocol(evaluator, models, test, categories, missing_rate, seed)
        for run_seed in range(seeds):
            retrained = (
                models
                if run_seed == model.training.get("config", {}).get("seed")
                else train_baselines(model, train, val, [FUSION, *kinds], progress, seed=run_seed)
            )
            fusion, remaining, naive = _lost_scores(retrained, test, categories, missing_rate, seed)[:3]
            result.seed_runs.append(
                SeedRun(
                    seed=run_seed,
                    fusion=evaluator.macro_auroc(fusion, informative),
                    remaining=evaluator.macro_auroc(remaining, informative),
                    naive=evaluator.macro_auroc(naive, informative),
                    fusion_minus_remaining=evaluator.macro_auroc(fusion, informative, minus=remaining),
                    fusion_minus_naive=evaluator.macro_auroc(fusion, informative, minus=naive),
                )
            )
    return result


def _lost_scores(
    models: dict[str, FusionModel], test: LabeledInput, categories: tuple[str, ...], rate: float, seed: int
) -> tuple[Scores, Scores, Scores, dict[str, Scores], torch.Tensor, torch.Tensor]:
    """Fusion, remaining-modality baseline and naive fusion on the posts that lost a modality; every model's scores
    on the whole degraded set; and the masks of posts that lost their text and their images."""
    degraded, lost_text, lost_image = missing_protocol(test, rate, seed)
    lost = lost_text | lost_image
    scored = {name: _score(m, degraded, categories, "70%-missing", name) for name, m in models.items()}
    remaining = _combine(
        [(lost_image, scored[TEXT_BASELINE]), (lost_text, scored[IMAGE_BASELINE])], LOST_VIEW, REMAINING
    )
    return (
        _restrict(scored[FUSION], lost, LOST_VIEW),
        _restrict(remaining, lost, LOST_VIEW),
        _restrict(scored[NAIVE], lost, LOST_VIEW),
        scored,
        lost_text,
        lost_image,
    )


def _missing_protocol(
    evaluator: Evaluator,
    models: dict[str, FusionModel],
    test: LabeledInput,
    categories: tuple[str, ...],
    rate: float,
    seed: int,
) -> tuple[str, ...]:
    """Record the protocol's rows and differences; returns the informative categories."""
    fusion, remaining, naive, scored, lost_text, lost_image = _lost_scores(models, test, categories, rate, seed)
    # Categories that the modality a post kept can inform: the remaining-modality baseline beats chance on them.
    informative = tuple(c for i, c in enumerate(categories) if evaluator.auroc(remaining, i).low > 0.5)
    macros = {MACRO: categories, INFORMATIVE_MACRO: informative}
    for scores in (fusion, remaining, naive):
        evaluator.add(scores, macros)
    evaluator.compare(fusion, remaining, macros)
    evaluator.compare(fusion, naive, macros)
    for name in (FUSION, NAIVE):
        evaluator.add(Scores(ALL_POSTS_VIEW, name, scored[name].probs, scored[name].labels))
    lost = lost_text | lost_image
    evaluator.result.info["missing"] = {
        "lost_text": int(lost_text.sum()),
        "lost_image": int(lost_image.sum()),
        "complete": int((~lost).sum()),
        "informative": list(informative),
    }
    return informative


def _check_encoders(model: FusionModel, encoders: Encoders) -> None:
    text, image = encoders.refs()
    for expected, actual in ((model.text_encoder_ref, text), (model.image_encoder_ref, image)):
        if expected.version != actual.version:
            raise ConfigError(
                f"model {model.version} was trained on {expected.version} embeddings, but {actual.name} is now "
                f"{actual.version}: retrain the model (`moderation train` or `moderation build-default-model`)"
            )


def _describe(
    rows: list[Any],
    data_path: Path,
    train_file: Path,
    val_file: Path,
    train: LabeledInput,
    val: LabeledInput,
    resamples: int,
    seed: int,
    missing_rate: float,
) -> dict[str, Any]:
    texts = {row.post.get("text") for row in rows if row.post.get("text")}
    photos = {
        (img.get("ref") or {}).get("key") or (img.get("inline") or {}).get("data", "")[:64]
        for row in rows
        for img in row.post.get("images", [])
    }
    return {
        "test_file": str(data_path),
        "train_file": str(train_file),
        "val_file": str(val_file),
        "train_size": train.inputs.batch_size,
        "val_size": val.inputs.batch_size,
        "unique_texts": len(texts),
        "unique_photos": len(photos),
        "resamples": resamples,
        "seed": seed,
        "missing_rate": missing_rate,
    }
