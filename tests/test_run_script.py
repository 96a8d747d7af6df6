"""``scripts/run.sh``: after the first start it neither reinstalls nor prints anything but
drossel's own output (the install is stamped with the dependency files)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

import drossel

ROOT = Path(__file__).resolve().parents[1]
STAMP = ROOT / ".venv" / ".drossel-install-stamp"


def run_sh(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROSSEL_")}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "run.sh"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "drossel").exists(), reason="no .venv here")
def test_second_start_is_quiet_and_does_not_reinstall() -> None:
    first = run_sh("--version")  # installs only if the stamp is missing or stale
    assert first.returncode == 0, first.stderr
    expected = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    assert STAMP.read_text().strip() == expected
    second = run_sh("--version")
    assert second.returncode == 0
    assert second.stdout.strip() == f"drossel {drossel.__version__}"
    assert second.stderr == ""  # no install, no pip or setuptools warnings
