"""How commands print rows: a table that fits the terminal, all columns (``--wide``), CSV or JSON.

Rows are plain dicts and are formatted generically from their keys, so a new field in a report
row shows up in ``--wide``, ``--csv`` and ``--json`` without touching this module; the narrow
table picks the columns an operator reads first, by key name, and wraps cells instead of cutting
them to a few characters.  A reader that closes the pipe early (``drossel catalog | head``) ends
the command quietly instead of with a traceback.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: Exit status after the reader closed the pipe: what a process killed by SIGPIPE reports.
EXIT_CLOSED_PIPE = 141

#: Short headings for long key names, so narrow tables keep their width for the values.
HEADINGS = {
    "server_fqdn": "server",
    "update_name": "update",
    "throttle_minutes": "thr",
    "block_minutes": "blk",
    "next_stage_start": "next stage",
    "recommended_builds": "install",
    "first_seen": "first",
    "last_seen": "last",
    "first_detected": "first",
    "release_date": "released",
    "throttle_start": "throttle",
    "block_start": "block",
    "refused_per_day_final": "ref/day",
    "messages": "msgs",
}

#: Cells up to this long are never folded in a narrow table (dates, builds, statuses, numbers);
#: longer ones (server names, reasons) take the wrapping.
UNBROKEN = 12


class CliError(Exception):
    """A usage or input problem; printed as one line."""


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every key of every row, in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def cell(value: Any) -> str:
    """One value as text: lists joined, mappings as ``k=v``, ``None`` empty, dates as days."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return " ".join(f"{k}={cell(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "; ".join(cell(v) for v in value)
    return str(value)


def write_csv(
    rows: Sequence[Mapping[str, Any]], out: Any = None, empty_columns: Sequence[str] = ()
) -> None:
    """A header row of every key, then one row per dict (nested values flattened to text).
    With no rows the header is ``empty_columns`` (when given)."""
    out = out or sys.stdout
    columns = columns_of(rows) or list(empty_columns)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])


#: A CSV cell starting with one of these is a formula to spreadsheet programs.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = json.dumps(value, default=str) if isinstance(value, Mapping) else cell(value)
    # header-derived text (evidence, server names) must not run as a formula when the file
    # is opened in a spreadsheet: quote it the way spreadsheets expect
    return "'" + text if text.startswith(FORMULA_START) else text


def emit_json(data: Any, out: Any = None) -> None:
    (out or sys.stdout).write(json.dumps(data, indent=2, default=str) + "\n")


def pick(available: Iterable[str], preferred: Sequence[str]) -> list[str]:
    """The preferred keys that rows actually have, in preferred order."""
    have = set(available)
    return [c for c in preferred if c in have]


def print_table(
    rows: Sequence[Mapping[str, Any]],
    narrow: Sequence[str] | None = None,
    *,
    wide: bool = False,
    title: str | None = None,
    width: int | None = None,
) -> None:
    """Rows as a table.  Narrow (default): the ``narrow`` keys the rows have, cells wrapped to the
    terminal (80 columns when not a terminal).  ``wide``: every key, nothing wrapped."""
    from rich.console import Console
    from rich.table import Table

    if not rows:
        print("(none)")
        return
    keys = columns_of(rows)
    shown = keys if wide or not narrow else (pick(keys, narrow) or keys)
    # wide: room for any row (the table is only as wide as its cells); narrow: the terminal's
    # width, 80 columns when output is not a terminal (rich's default), or ``width``
    console = Console(width=10_000) if wide else Console(width=width)
    table = Table(
        title=title,
        expand=False,
        pad_edge=False,
        collapse_padding=True,
        show_edge=False,
        box=None if wide else _box(),
    )
    cells = [[_short(key, row.get(key), wide) for key in shown] for row in rows]
    for i, key in enumerate(shown):
        heading = key if wide else HEADINGS.get(key, key)
        longest = max(len(r[i]) for r in cells)
        table.add_column(
            heading,
            overflow="fold",
            no_wrap=wide,
            min_width=None if wide else min(max(longest, len(heading)), UNBROKEN),
        )
    for row_cells in cells:
        table.add_row(*row_cells)
    console.print(table)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """Rows under ``headers``, fitted to the terminal (cells wrap rather than being cut)."""
    print_table([dict(zip(headers, row, strict=False)) for row in rows])


def _box() -> Any:
    from rich import box

    return box.SIMPLE_HEAD


def _short(key: str, value: Any, wide: bool) -> str:
    """In narrow tables schedule dates (``*_start``, ``*_seen``) show their day, other
    timestamps their minute; everything else in full."""
    text = cell(value)
    if wide or not isinstance(value, str) or len(text) < 19 or text[10:11] != "T":
        return text
    if key.endswith(("_start", "_seen", "_detected")):
        return text[:10]
    return f"{text[:10]} {text[11:16]}"


def output(
    rows: Sequence[Mapping[str, Any]],
    args: Any,
    narrow: Sequence[str] | None = None,
    title: str | None = None,
) -> None:
    """Print ``rows`` as the command's ``--json``/``--csv``/``--wide`` flags ask."""
    if getattr(args, "json", False):
        emit_json(list(rows))
    elif getattr(args, "csv", False):
        write_csv(rows)
    else:
        print_table(rows, narrow, wide=getattr(args, "wide", False), title=title)


def add_format_flags(parser: Any, wide: bool = True) -> None:
    """``--csv`` (and ``--wide``) beside the usual ``--json``."""
    parser.add_argument("--csv", action="store_true", help="CSV with a header row (all fields)")
    if wide:
        parser.add_argument(
            "--wide", action="store_true", help="every field as a column, nothing wrapped"
        )


def closed_pipe() -> int:
    """The reader went away (``| head``): stop writing, and let the interpreter's final flush
    write to /dev/null instead of raising a second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_CLOSED_PIPE
