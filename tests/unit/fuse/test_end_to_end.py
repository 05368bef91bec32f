"""The whole fusion workflow through its commands, on the real data and encoders (slow: minutes on a cold cache)."""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from moderation.decide.policy import PolicyDocument
from moderation.fuse import load_fusion_model
from moderation.fuse.cli import COMMANDS

pytestmark = pytest.mark.slow
CACHE = Path("data/cache")  # content-addressed: sharing it with real runs is safe and saves the encoding


def _cli() -> click.Group:
    group = click.Group()
    for command in COMMANDS:
        group.add_command(command)
    return group


def _run(*args: str) -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(_cli(), list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_datasets_train_eval_thresholds(tmp_path: Path) -> None:
    data, model, docs = tmp_path / "data", tmp_path / "model", tmp_path / "docs"
    _run("datasets", "build", "--seed", "0", "--out", str(data), "--name", "proxy-multimodal")
    split = data / "proxy-multimodal"
    _run("train", "--data", str(split / "train.jsonl"), "--val", str(split / "val.jsonl"), "--out", str(model),
         "--signal", "proxy", "--cache-dir", str(CACHE))  # fmt: skip
    loaded = load_fusion_model(model)
    assert loaded.signal == dict.fromkeys(loaded.categories, "proxy")
    output = _run("eval", "--model", str(model), "--data", str(split / "test.jsonl"), "--out", str(docs),
                  "--resamples", "200", "--seeds", "1", "--cache-dir", str(CACHE))  # fmt: skip
    assert "combination_decided" in output and (docs / "proxy-multimodal.md").is_file()
    _run("thresholds", "--model", str(model), "--data", str(split / "val.jsonl"), "--precision", "0.9",
         "--review-capacity", "500/day", "--traffic", "100000/day", "--cache-dir", str(CACHE))  # fmt: skip
    policy = PolicyDocument(**yaml.safe_load((model / "policy.yaml").read_text()))
    assert policy.model_version == loaded.version
    assert all(rule.mode == "observe" for rule in policy.categories.values())  # proxy signal is never enforced
