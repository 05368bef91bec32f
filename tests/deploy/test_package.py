"""The built package: a non-editable install (what the container images do) must carry the message schemas."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_every_schema(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for folder in ("moderation", "schemas"):
        shutil.copytree(ROOT / folder, source / folder, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    subprocess.run([*build, str(source)], check=True, timeout=300, cwd=tmp_path)
    (wheel,) = tmp_path.glob("moderation-*.whl")
    packaged = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("moderation/_schemas/")}
    expected = {f"moderation/_schemas/{path.name}" for path in (ROOT / "schemas").glob("*.json")}
    assert expected and packaged == expected
