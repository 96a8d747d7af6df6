"""``drossel analyze PATH``: what enforcement would do to the mail in an existing archive."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from drossel.analyze import report, scan
from drossel.app.catalog_source import packaged_catalog
from drossel.archive import Archive, ArchiveError, Progress, open_archive
from drossel.cli.output import CliError, add_format_flags, emit_json, print_table, write_csv

#: Columns of the default (80-column) table; ``--wide``, ``--csv`` and ``--json`` show all.
TABLE_COLUMNS = (
    "server",
    "build",
    "status",
    "messages",
    "throttle_start",
    "block_start",
    "refused_per_day_final",
)


@contextmanager
def _progress(archive: Archive, show: bool) -> Iterator[Progress | None]:
    """A progress bar on stderr when it is a terminal; nothing otherwise."""
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress as Bar

    with Bar(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"reading {archive.kind} {archive.path.name}", total=archive.total())
        yield lambda done: bar.update(task, completed=done)


def cmd_analyze(ctx: Any) -> int:

    args = ctx.args
    try:
        archive = open_archive(args.path)
        with _progress(archive, sys.stderr.isatty() and not args.quiet) as progress:
            analysis = scan(archive, ctx.config.policy, progress)
    except ArchiveError as exc:
        raise CliError(str(exc)) from None
    result = report(
        analysis, ctx.now, packaged_catalog(), ctx.config.policy, str(args.path), args.tenant
    )
    if args.json:
        emit_json(result)
        return 0
    rows = [{k: v for k, v in s.items() if k != "stages"} for s in result["servers"]]
    if args.csv:
        write_csv(rows, empty_columns=TABLE_COLUMNS)
        return 0
    print_table(rows, TABLE_COLUMNS, wide=args.wide)
    on_prem = result["messages_from_on_premises_exchange"]
    print(
        f"{result['messages']} messages, {on_prem} from {len(rows)} on-premises Exchange "
        f"servers;\nschedule as if enforcement started {result['at'][:10]}"
    )
    return 0


def register(sub: Any, command: Any) -> None:
    p = command("analyze", cmd_analyze, "what enforcement would do to the mail in an archive")
    p.add_argument("path", help="an mbox file, a Maildir, or a directory of .eml files")
    p.add_argument(
        "--tenant", default="default", help="tenant whose minute windows to use (default: default)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_format_flags(p)
