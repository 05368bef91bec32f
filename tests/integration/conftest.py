"""Fixtures shared by the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from moderation.demo.run import ensure_default_model
from moderation.settings import load_settings


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The default model artifact, built once if it is not there yet (as `make demo` does)."""
    settings = load_settings()
    ensure_default_model(settings)
    return settings.model_dir
