"""The code stays ruff clean and the pure core stays ``mypy --strict`` clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
def test_ruff_clean() -> None:
    result = _run("ruff", "check", "src", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_core_and_milter() -> None:
    pytest.importorskip("mypy")
    result = _run(
        sys.executable, "-m", "mypy", "--strict", "src/drossel/core", "src/drossel/milter"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_does_no_io() -> None:
    """The core is pure: no files, sockets, databases or clocks."""
    forbidden = (
        "import socket",
        "import sqlalchemy",
        "open(",
        "datetime.now",
        "time.time",
        "import asyncio",
        "from drossel.storage",
        "from drossel.engine",
        "Path(",
    )
    for path in (ROOT / "src" / "drossel" / "core").glob("*.py"):
        text = path.read_text()
        for needle in forbidden:
            assert needle not in text, f"{path.name} uses {needle!r}"
