"""File-level workflows behind the commands: train from dataset files, propose thresholds, build the default model.

The default model (``moderation build-default-model``) covers the product taxonomy. Only ``spam`` has training
data (the SMS Spam Collection, via the ``default-training`` dataset); every other category has no model yet, is
marked ``signal: none`` in the config, always scores 0 and is put in observe mode by the shipped policy.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moderation.decide.thresholds import Proposal, policy_document, propose, write_policy
from moderation.errors import ConfigError
from moderation.fuse.datasets import SPLITS, build_dataset
from moderation.fuse.embed import DEFAULT_CACHE, Encoders, dataset_name, embed_rows, read_rows
from moderation.fuse.inputs import IMAGE_ONLY, NONE, TEXT_ONLY, LabeledInput
from moderation.fuse.model import POLICY_FILE, FusionModel, load_fusion_model
from moderation.fuse.train import TrainConfig, train_model
from moderation.taxonomy import CATEGORY_NAMES, Signal

DEFAULT_TEXT_ENCODER, DEFAULT_IMAGE_ENCODER = "minilm-l6", "efficientnet-lite0"
DEFAULT_SIGNAL: dict[str, Signal] = {"spam": "validated"}
# The shipped policy sends at most this share of posts to human review (the spam model is sharp: a band held to a
# review precision of 0.5 would be empty on the SMS validation data).
DEFAULT_REVIEW_SHARE = 0.02


@dataclass(frozen=True)
class TrainedArtifact:
    folder: Path
    version: str
    seconds: float


def train_from_files(
    train_path: Path,
    val_path: Path,
    out: Path,
    config: TrainConfig,
    *,
    text_encoder: str = DEFAULT_TEXT_ENCODER,
    image_encoder: str = DEFAULT_IMAGE_ENCODER,
    categories: tuple[str, ...] | None = None,
    signal: Mapping[str, Signal] | None = None,
    name: str | None = None,
    cache_root: Path = DEFAULT_CACHE,
    device: str = "cpu",
    progress: bool = True,
) -> TrainedArtifact:
    """Embed (through the cache), train, calibrate and save a model folder."""
    started = time.monotonic()
    train_rows, val_rows = read_rows(train_path), read_rows(val_path)
    labelled = tuple(sorted({c for row in train_rows for c in row.labels}))
    if not labelled:
        raise ConfigError(f"{train_path} has no labels: each line needs {{'labels': {{category: 0 | 1}}}}")
    encoders = Encoders(text_encoder, image_encoder, device=device)
    train = embed_rows(train_rows, labelled, encoders, cache_root=cache_root, progress=progress)
    val = embed_rows(val_rows, labelled, encoders, cache_root=cache_root, progress=progress)
    text_ref, image_ref = encoders.refs()
    all_categories = categories or labelled
    missing = set(labelled) - set(all_categories)
    if missing:
        raise ConfigError(f"labelled categories {sorted(missing)} are not among --categories")
    levels: dict[str, Signal] = {c: "none" for c in all_categories}
    levels.update({c: "unvalidated" for c in labelled})
    levels.update(signal or {})
    model = train_model(
        train,
        val,
        config,
        text_encoder=text_ref,
        image_encoder=image_ref,
        categories=all_categories,
        signal=levels,
        metadata={
            "dataset": dataset_name(train_path),
            "data": {"train": str(train_path), "val": str(val_path)},
            "sizes": {"train": train.inputs.batch_size, "val": val.inputs.batch_size},
        },
        progress=progress,
    )
    version = model.save(out, name or dataset_name(train_path))
    return TrainedArtifact(out, version, time.monotonic() - started)


def no_evidence_scores(model: FusionModel, data: LabeledInput) -> dict[str, float]:
    """Per category, the highest score the model gives whole availability subsets alike (no, or only
    uninformative, content): validation posts are cut to each availability and a subset whose scores do not vary
    carries no evidence about the post."""
    floors: dict[str, float] = {}
    for code in (NONE, TEXT_ONLY, IMAGE_ONLY):
        cut = data.as_availability(code).inputs
        probs = model.predict_proba(cut)[(cut.availability() == code).numpy()]
        for column, category in enumerate(model.head_categories):
            if probs.shape[0] and float(np.ptp(probs[:, column])) < 1e-9:
                floors[category] = max(floors.get(category, 0.0), float(probs[0, column]))
    return floors


def propose_for_model(
    model_dir: Path,
    data_path: Path,
    *,
    precision: float,
    review_precision: float = 0.5,
    review_capacity: float | None = None,
    traffic: float | None = None,
    out: Path | None = None,
    policy_version: str | None = None,
    enforce: tuple[str, ...] = (),
    observe: tuple[str, ...] = (),
    cache_root: Path = DEFAULT_CACHE,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[Path, list[Proposal]]:
    """Score the validation file, propose thresholds, and write the policy (default: the model's policy.yaml)."""
    model = load_fusion_model(model_dir)
    rows = read_rows(data_path)
    encoders = Encoders(model.text_encoder, model.image_encoder, device=device)
    data = embed_rows(rows, model.head_categories, encoders, cache_root=cache_root, progress=progress)
    probs = model.predict_proba(data.inputs)
    labels = data.labels.double().numpy()
    scores, truth = {}, {}
    for column, category in enumerate(model.head_categories):
        known = ~np.isnan(labels[:, column])
        if known.any():
            scores[category], truth[category] = probs[known, column], labels[known, column]
    unknown = (set(enforce) | set(observe)) - set(model.categories)
    if unknown:
        raise ConfigError(f"--enforce/--observe name unknown categories {sorted(unknown)}: {model.categories}")
    modes = {c: "enforce" if model.signal.get(c) == "validated" else "observe" for c in model.categories}
    modes.update(dict.fromkeys(enforce, "enforce"))
    modes.update(dict.fromkeys(observe, "observe"))
    proposals = propose(
        scores,
        truth,
        modes,
        precision=precision,
        review_precision=review_precision,
        review_capacity=review_capacity,
        traffic=traffic,
        floors=no_evidence_scores(model, data),
    )
    target = out or model_dir / POLICY_FILE
    document = policy_document(proposals, version=policy_version, model_version=model.version)
    write_policy(target, document, proposals, f"{data_path} (precision target {precision:g}) for {model.version}")
    return target, proposals


def build_default_model(
    out: Path = Path("models/default"),
    *,
    data_dir: Path = Path("data/datasets"),
    seed: int = 0,
    precision: float = 0.95,
    review_share: float = DEFAULT_REVIEW_SHARE,
    cache_root: Path = DEFAULT_CACHE,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[TrainedArtifact, Path]:
    """Build the datasets it needs if absent, train the default model, write its policy next to it."""
    folder = data_dir / "default-training"
    if not all((folder / f"{split}.jsonl").is_file() for split in SPLITS):
        build_dataset("default-training", seed, data_dir)
    artifact = train_from_files(
        folder / "train.jsonl",
        folder / "val.jsonl",
        out,
        TrainConfig(seed=seed),
        categories=CATEGORY_NAMES,
        signal=DEFAULT_SIGNAL,
        name="default",
        cache_root=cache_root,
        device=device,
        progress=progress,
    )
    # Review is sized by capacity: ``review_share`` of the traffic (as a capacity of that many posts per 100,000).
    policy, _ = propose_for_model(
        out,
        folder / "val.jsonl",
        precision=precision,
        review_capacity=review_share * 100_000,
        traffic=100_000,
        cache_root=cache_root,
        device=device,
        progress=progress,
    )
    return artifact, policy
