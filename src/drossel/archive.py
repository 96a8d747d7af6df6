"""Read the header blocks of the messages in a mail archive, one at a time.

An archive is an mbox file, a Maildir (``cur/`` and ``new/``), a directory of ``.eml`` files or a
single message file.  The layouts are those of Python's :mod:`mailbox` (an mbox message starts
at every line beginning with ``From ``, a Maildir message is one file in ``cur/`` or ``new/``),
but :mod:`mailbox` indexes the whole archive before the first message and reads each message
whole; here only the header block of each message is read and the rest is skipped, so memory
stays constant and a large archive streams at disk speed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from drossel.core.detection import MAX_HEADER_BYTES

#: Progress callback: how far the reader is, in the unit of ``Archive.total``.
Progress = Callable[[int], None]


class ArchiveError(ValueError):
    """The path is not a readable archive; the message says why."""


@dataclass(frozen=True, slots=True)
class Archive:
    path: Path
    kind: str  # "mbox", "maildir", "directory" or "message"

    @property
    def unit(self) -> str:
        return "bytes" if self.kind == "mbox" else "messages"

    def total(self) -> int:
        """The progress total: bytes of an mbox, else the number of message files."""
        if self.kind == "mbox":
            return self.path.stat().st_size
        return sum(1 for _ in self._files())

    def headers(self, progress: Progress | None = None) -> Iterator[bytes]:
        """The header block of every message, in archive order."""
        if self.kind == "mbox":
            yield from _mbox_headers(self.path, progress)
            return
        for done, file in enumerate(self._files(), 1):
            block = _file_headers(file)
            if block is not None:
                yield block
            if progress is not None:
                progress(done)

    def _files(self) -> Iterator[Path]:
        if self.kind == "message":
            yield self.path
        elif self.kind == "maildir":
            for sub in ("new", "cur"):
                yield from _files_in(self.path / sub, lambda name: not name.startswith("."))
        else:
            yield from _files_in(self.path, lambda name: name.lower().endswith(".eml"))


def open_archive(path: str | Path) -> Archive:
    """Recognise the archive at ``path`` (clear error when it is none)."""
    p = Path(path)
    if p.is_dir():
        if (p / "cur").is_dir() and (p / "new").is_dir():
            return Archive(p, "maildir")
        return Archive(p, "directory")
    try:
        with p.open("rb") as f:
            start = f.read(5)
    except OSError as exc:
        raise ArchiveError(f"cannot read {path}: {exc.strerror}") from None
    return Archive(p, "mbox" if start == b"From " else "message")


def _files_in(directory: Path, wanted: Callable[[str], bool]) -> Iterator[Path]:
    """Regular files in ``directory``, in directory order: streamed, so a directory of a
    million messages costs no more memory than one of ten (the analysis does not depend on the
    order: a server's build is the one of its newest message by date)."""
    try:
        entries = os.scandir(directory)
    except OSError as exc:
        raise ArchiveError(f"cannot list {directory}: {exc.strerror}") from None
    with entries:
        for entry in entries:
            try:
                if entry.is_file() and wanted(entry.name):
                    yield Path(entry.path)
            except OSError:
                continue


def _file_headers(path: Path) -> bytes | None:
    """The header block of one message file; ``None`` when it cannot be read."""
    try:
        with path.open("rb") as f:
            return _read_block(f)
    except OSError:
        return None


def _read_block(f: object) -> bytes:
    lines: list[bytes] = []
    size = 0
    for line in f:  # type: ignore[attr-defined]
        if line in (b"\n", b"\r\n"):
            break
        size += len(line)
        if size > MAX_HEADER_BYTES:
            break
        lines.append(line)
    return b"".join(lines)


def _mbox_headers(path: Path, progress: Progress | None) -> Iterator[bytes]:
    """Split an mbox at ``From `` lines; keep each message's header block, skip its body."""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise ArchiveError(f"cannot read {path}: {exc.strerror}") from None
    with f:
        lines: list[bytes] = []
        size = 0
        in_headers = False
        done = 0
        for line in f:
            done += len(line)
            if line.startswith(b"From "):
                if in_headers or lines:
                    yield b"".join(lines)
                lines, size, in_headers = [], 0, True
                if progress is not None:
                    progress(done)
                continue
            if not in_headers:
                continue
            if line in (b"\n", b"\r\n"):
                in_headers = False
                yield b"".join(lines)
                lines, size = [], 0
                continue
            size += len(line)
            if size <= MAX_HEADER_BYTES:
                lines.append(line)
        if in_headers:
            yield b"".join(lines)
        if progress is not None:
            progress(done)
