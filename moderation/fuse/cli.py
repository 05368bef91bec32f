"""Commands of the fusion stage: ``datasets build``, ``train``, ``eval``, ``thresholds``, ``build-default-model``.

The main ``moderation`` group adds every command of :data:`COMMANDS`. Each command prints what it wrote and how
long it took; failures are ``ModerationError`` subclasses with a fix hint, printed as one line by the main group.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from moderation.errors import ConfigError
from moderation.taxonomy import SIGNAL_LEVELS, Signal


def _elapsed(started: float) -> str:
    return f"{time.monotonic() - started:.1f} s"


@click.group(name="datasets")
def datasets() -> None:
    """Build the evaluation and training datasets from data that installs offline."""


@datasets.command(name="build")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the splits and the sampling.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("data/datasets"), show_default=True)
@click.option("--name", "names", multiple=True, help="Dataset to build (repeatable); default: all of them.")
def build_datasets(seed: int, out: Path, names: tuple[str, ...]) -> None:
    """Write sms-spam, proxy-multimodal and default-training as train/val/test JSONL files with meta.json."""
    from moderation.fuse.datasets import DATASETS, build_dataset

    for name in names or DATASETS:
        started = time.monotonic()
        folder = build_dataset(name, seed, out)
        click.echo(f"{name}: {folder} ({_elapsed(started)})")


def _level(value: str, option: str) -> Signal:
    for level in SIGNAL_LEVELS:
        if value == level:
            return level
    raise ConfigError(f"--signal {option!r}: the level must be one of {', '.join(SIGNAL_LEVELS)}")


def _parse_signal(values: tuple[str, ...], labelled: Callable[[], set[str]]) -> dict[str, Signal] | None:
    """``--signal proxy`` (every labelled category) or ``--signal spam=validated`` (repeatable)."""
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return dict.fromkeys(labelled(), _level(values[0], values[0]))
    levels = {}
    for value in values:
        category, sep, level = value.partition("=")
        if not sep:
            raise ConfigError(f"--signal {value!r}: expected LEVEL or CATEGORY=LEVEL")
        levels[category] = _level(level, value)
    return levels


@click.command()
@click.option("--data", "train_path", type=click.Path(path_type=Path), required=True, help="Training JSONL.")
@click.option("--val", "val_path", type=click.Path(path_type=Path), required=True, help="Validation JSONL.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Model folder to write.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=int, default=None, help="Most training epochs (early stopping may end sooner).")
@click.option("--head", default="masked-late-fusion", show_default=True, help="Registered fusion head.")
@click.option(
    "--baseline",
    type=click.Choice(["fusion", "text-only", "image-only", "naive-fusion"]),
    default="fusion",
    show_default=True,
    help="Train a baseline with the same trainer instead.",
)
@click.option("--text-encoder", default="minilm-l6", show_default=True)
@click.option("--image-encoder", default="efficientnet-lite0", show_default=True)
@click.option("--categories", default=None, help="Comma-separated output categories (default: the labelled ones).")
@click.option("--signal", "signal", multiple=True, help="Signal level: LEVEL for all, or CATEGORY=LEVEL.")
@click.option(
    "--input-norm",
    type=click.Choice(["layer", "standard-layer"]),
    default="standard-layer",
    show_default=True,
    help="How the head normalises embeddings (layer: the ablation of docs/MODEL_CARD.md).",
)
@click.option("--name", default=None, help="Version prefix (default: the dataset's name).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path("data/cache"), show_default=True)
@click.option("--device", default="cpu", show_default=True)
def train(
    train_path: Path, val_path: Path, out: Path, seed: int, epochs: int | None, head: str, baseline: str,
    text_encoder: str, image_encoder: str, categories: str | None, signal: tuple[str, ...], input_norm: str,
    name: str | None, cache_dir: Path, device: str,
) -> None:  # fmt: skip
    """Train a fusion model (embeddings cached), calibrate it on validation per availability, save it."""
    from dataclasses import replace

    from moderation.fuse.build import train_from_files
    from moderation.fuse.embed import read_rows
    from moderation.fuse.train import TrainConfig, baseline_config

    started = time.monotonic()
    config = TrainConfig(seed=seed, head=head, input_norm=input_norm)
    if epochs is not None:
        config = replace(config, epochs=epochs)
    config = baseline_config(baseline, config)
    parsed = _parse_signal(signal, lambda: {c for row in read_rows(train_path) for c in row.labels})
    artifact = train_from_files(
        train_path, val_path, out, config,
        text_encoder=text_encoder, image_encoder=image_encoder,
        categories=tuple(c.strip() for c in categories.split(",")) if categories else None,
        signal=parsed,
        name=name, cache_root=cache_dir, device=device,
    )  # fmt: skip
    click.echo(f"model {artifact.version} written to {out} ({_elapsed(started)})")


@click.command(name="eval")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True, help="Model folder.")
@click.option("--data", "data_path", type=click.Path(path_type=Path), required=True, help="Test JSONL.")
@click.option(
    "--train",
    "train_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Baselines' training data (default: the model's own, from its config).",
)
@click.option("--val", "val_path", type=click.Path(path_type=Path), default=None)
@click.option("--out", type=click.Path(path_type=Path), default=Path("docs/eval"), show_default=True)
@click.option("--resamples", type=int, default=1000, show_default=True, help="Bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap and of the protocol.")
@click.option("--missing-rate", type=float, default=0.7, show_default=True)
@click.option(
    "--seeds",
    type=int,
    default=5,
    show_default=True,
    help="Training seeds over which the 70%-missing comparison is repeated (0: none).",
)
@click.option("--notes", default="", help="A paragraph to put under the report's header.")
@click.option("--report-name", default=None, help="Report file name without .md (default: the dataset's name).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path("data/cache"), show_default=True)
@click.option("--device", default="cpu", show_default=True)
def evaluate(
    model_dir: Path, data_path: Path, train_path: Path | None, val_path: Path | None, out: Path, resamples: int,
    seed: int, missing_rate: float, seeds: int, notes: str, report_name: str | None, cache_dir: Path, device: str,
) -> None:  # fmt: skip
    """Evaluate a model and its baselines; write docs/eval/<dataset>.md and its plots."""
    from moderation.fuse.evaluate import evaluate as run_evaluation
    from moderation.fuse.report import acceptance_checks, write_report

    started = time.monotonic()
    result = run_evaluation(
        model_dir, data_path, train_path=train_path, val_path=val_path, resamples=resamples, seed=seed,
        missing_rate=missing_rate, seeds=seeds, cache_root=cache_dir, device=device,
    )  # fmt: skip
    command = "moderation eval " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 2 else ""
    command = command or f"moderation eval --model {model_dir} --data {data_path}"
    report = write_report(result, out, command, notes, report_name)
    for check in acceptance_checks(result):
        click.echo(f"{'PASS' if check.passed else 'FAIL'}  {check.name}: {check.measured} (target {check.target})")
    click.echo(f"report written to {report} ({_elapsed(started)})")


@click.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True, help="Model folder.")
@click.option("--data", "data_path", type=click.Path(path_type=Path), required=True, help="Validation JSONL.")
@click.option("--precision", type=float, default=0.95, show_default=True, help="Precision target of `block`.")
@click.option(
    "--review-precision",
    type=float,
    default=0.5,
    show_default=True,
    help="Precision target of `review` when no review capacity is given.",
)
@click.option("--review-capacity", default=None, help="Moderator capacity, e.g. '2000/day' (needs --traffic).")
@click.option("--traffic", default=None, help="Expected posts per day, e.g. '1000000/day'.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Policy file (default: MODEL/policy.yaml).")
@click.option("--policy-version", default=None, help="Policy version (default: today's date + '.1').")
@click.option("--enforce", multiple=True, help="Category to enforce even without validated signal (repeatable).")
@click.option("--observe", multiple=True, help="Category to observe only (repeatable).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path("data/cache"), show_default=True)
@click.option("--device", default="cpu", show_default=True)
def thresholds(
    model_dir: Path, data_path: Path, precision: float, review_precision: float, review_capacity: str | None,
    traffic: str | None, out: Path | None, policy_version: str | None, enforce: tuple[str, ...],
    observe: tuple[str, ...], cache_dir: Path, device: str,
) -> None:  # fmt: skip
    """Propose per-category block and review thresholds from validation scores and write a policy file."""
    from moderation.decide.thresholds import parse_per_day
    from moderation.fuse.build import propose_for_model

    started = time.monotonic()
    path, proposals = propose_for_model(
        model_dir, data_path, precision=precision, review_precision=review_precision,
        review_capacity=parse_per_day(review_capacity) if review_capacity else None,
        traffic=parse_per_day(traffic) if traffic else None, out=out, policy_version=policy_version,
        enforce=enforce, observe=observe, cache_root=cache_dir, device=device,
    )  # fmt: skip
    for p in proposals:
        click.echo(f"{p.category:<22} {p.mode:<8} block {p.block:.4f}  review {p.review:.4f}  {p.note}")
    click.echo(f"policy written to {path} ({_elapsed(started)})")


@click.command(name="build-default-model")
@click.option("--out", type=click.Path(path_type=Path), default=Path("models/default"), show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("data/datasets"), show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--precision", type=float, default=0.95, show_default=True, help="Precision target of `block`.")
@click.option(
    "--review-share",
    type=float,
    default=0.02,
    show_default=True,
    help="Most of the traffic the policy sends to review.",
)
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path("data/cache"), show_default=True)
@click.option("--device", default="cpu", show_default=True)
def build_default_model(
    out: Path, data_dir: Path, seed: int, precision: float, review_share: float, cache_dir: Path, device: str
) -> None:
    """Build the shipped model: spam from the SMS Spam Collection, other categories observe-only without signal."""
    from moderation.fuse.build import build_default_model as build

    started = time.monotonic()
    artifact, policy = build(out, data_dir=data_dir, seed=seed, precision=precision, review_share=review_share,
                             cache_root=cache_dir, device=device)  # fmt: skip
    click.echo(f"default model {artifact.version} written to {out}, policy {policy} ({_elapsed(started)})")


COMMANDS: list[click.Command] = [datasets, train, evaluate, thresholds, build_default_model]
