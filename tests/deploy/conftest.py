"""Deployment artefacts (images, compose stack, Helm chart) checked statically: no cluster, no Docker, no network."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Registered here as well as in pyproject.toml, so `--strict-markers` accepts it either way.
    config.addinivalue_line("markers", "deploy: static checks of deploy/ and helm/ (no cluster, no Docker)")
