from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "web"))

from drossel_seed import Seeded, seed
from smtp_sink import Sink, free_port


@pytest.fixture
def smtp() -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink, port
    controller.stop()


@pytest.fixture
def seeded(tmp_path: Path, smtp: tuple[Sink, int]) -> Iterator[Seeded]:
    state = seed(tmp_path / "state.db", smtp_port=smtp[1])
    yield state
    state.store.dispose()
