"""docs/cli.md is generated from the argument parser; it must match what the parser says now."""

from __future__ import annotations

import argparse
from pathlib import Path

from drossel.cli.main import build_parser
from drossel.cli.manpage import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_docs_cli_md_is_up_to_date() -> None:
    assert DOC.read_text() == render(), (
        "docs/cli.md is stale: run `python -m drossel.cli.manpage > docs/cli.md`"
    )


def test_every_command_and_option_is_documented() -> None:
    page = render()

    def walk(parser: argparse.ArgumentParser, top: bool = False) -> None:
        assert top or f"# {parser.prog}\n" in page, parser.prog
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
            elif top:
                assert action.option_strings[0] in page
            elif action.option_strings and action.dest not in ("help", "config", "db", "at"):
                assert f"`{action.option_strings[0]}`" in page, (parser.prog, action.dest)

    walk(build_parser(), top=True)


def test_render_does_not_depend_on_the_terminal(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("COLUMNS", "40")
    narrow = render()
    monkeypatch.setenv("COLUMNS", "300")
    assert render() == narrow
