"""Long-running commands.  Each adapter package contributes its own (``register_cli``) so the
command line stays in step with what is installed: ``milter``, ``gateway``, ``web``, ``serve``,
``demo``."""

from __future__ import annotations

import importlib
from typing import Any

ADAPTERS = (
    "drossel.milter.cli",
    "drossel.gateway.cli",
    "drossel.cli.demo",
    "drossel.web.cli",
    "drossel.serve",
)


def register(sub: Any, command: Any) -> None:
    """Add the daemon commands to the ``drossel`` parser."""
    for name in ADAPTERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register_cli(sub, command)
