"""Long-running commands: ``milter``, ``gateway``, ``web``, ``serve`` and ``demo``."""

from __future__ import annotations

from typing import Any


def register(sub: Any, command: Any) -> None:
    """Add the daemon commands to the ``drossel`` parser."""
