"""``[milter] event_loop``: which event loop ``drossel milter`` runs on."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

import pytest

from drossel.config import ConfigError
from drossel.runtime import event_loop_runner

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


def test_asyncio_on_request() -> None:
    assert event_loop_runner("asyncio") == ("asyncio", asyncio.run)


def test_auto_prefers_uvloop_when_installed() -> None:
    name, run = event_loop_runner("auto")
    assert name == ("uvloop" if HAVE_UVLOOP else "asyncio")

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        assert type(loop).__module__.startswith("uvloop" if HAVE_UVLOOP else "asyncio")

    run(probe())


def test_uvloop_required_but_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes "import uvloop" fail
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        event_loop_runner("uvloop")
    assert event_loop_runner("auto")[0] == "asyncio"
