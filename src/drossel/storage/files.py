"""Private files: the SQLite state (and its WAL/shared-memory/journal files) and key files are
readable by their owner only.

SQLite creates the ``-wal``, ``-shm`` and ``-journal`` files with the mode of the database file,
so creating the database file 0600 before SQLite opens it is enough.  Files that exist already
keep their mode (an operator may have chosen it) but a mode open to group or others is logged as
a warning, because anyone able to read the state can read tenants, audit and token hashes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("drossel.files")

PRIVATE_MODE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files created inside are readable by the owner only, whatever else creates them."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def warn_if_shared(path: Path) -> bool:
    """Log a warning if ``path`` exists with group/other permissions; ``True`` if it did."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return False
    if mode & 0o077:
        log.warning(
            "%s has mode %04o: readable beyond its owner; run: chmod 600 %s", path, mode, path
        )
        return True
    return False


def create_private(path: Path, content: str = "") -> bool:
    """Create ``path`` with mode 0600 (never widening an existing file); ``True`` if created."""
    with private_umask():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
        except FileExistsError:
            return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
    return True


def private_sqlite_files(database: str | None) -> None:
    """Create the SQLite file 0600 before SQLite does, and warn about shared existing files."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    try:
        created = create_private(path)
    except OSError:  # no such directory, read-only: SQLite reports it when it opens the file
        return
    if not created:
        for candidate in (path, *(Path(f"{path}{s}") for s in SQLITE_COMPANIONS)):
            warn_if_shared(candidate)
