"""asyncio server: accepts MTA connections and runs one session per socket.

Failure policy: anything wrong with a connection (malformed, truncated or
oversized packet, a stalled peer, a write error) closes *that* connection
and logs one line; Postfix then applies its ``milter_default_action`` for
the SMTP session.  A failing policy is handled inside the session and never
closes the connection (see ``on_policy_error``).

Timeouts: ``read_timeout`` bounds every read while the MTA owes us bytes
(the opening OPTNEG, and the rest of a started packet) and every write.
Between packets the MTA is legitimately silent while its SMTP client thinks
or uploads the message (Postfix's smtpd_timeout is 300 s per command and the
headers only arrive after the whole DATA transfer), so waiting for the next
packet uses the longer ``idle_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from dataclasses import dataclass
from typing import Any, Literal

from drossel.milter.framing import DEFAULT_MAX_PACKET, PacketDecoder, ProtocolError
from drossel.milter.policy import MilterPolicy, OnPolicyError
from drossel.milter.session import MilterSession

log = logging.getLogger("drossel.milter")

DEFAULT_IDLE_TIMEOUT = 3600.0
DEFAULT_READ_SIZE = 65536


@dataclass(frozen=True)
class ListenAddress:
    """A parsed ``inet:HOST:PORT`` / ``inet6:HOST:PORT`` / ``unix:/path``."""

    kind: Literal["inet", "inet6", "unix"]
    host: str | None = None
    port: int | None = None
    path: str | None = None


def parse_listen(listen: str) -> ListenAddress:
    """Parse Postfix-style socket specs.

    Accepted: ``inet:HOST:PORT``, ``inet:[::1]:PORT``, ``inet6:HOST:PORT``
    (the host may contain colons), ``unix:/path`` and its alias ``local:``.
    libmilter's ``inet:PORT@HOST`` form is accepted too.
    """
    kind, sep, rest = listen.partition(":")
    if not sep or not rest:
        raise ValueError(f"listen address {listen!r} is not TYPE:ENDPOINT")
    if kind in ("unix", "local"):
        return ListenAddress("unix", path=rest)
    if kind not in ("inet", "inet6"):
        raise ValueError(f"unsupported listen type {kind!r} in {listen!r}")
    if "@" in rest:
        port_text, _, host = rest.partition("@")
    else:
        host, sep, port_text = rest.rpartition(":")
        if not sep:
            raise ValueError(f"listen address {listen!r} lacks a port")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"listen address {listen!r} has a bad host or port")
    return ListenAddress("inet6" if kind == "inet6" else "inet", host=host, port=int(port_text))


def _remove_stale_socket(path: str) -> None:
    """Unlink a leftover socket file, but never a live socket or a non-socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listening: stale
    else:
        raise OSError(errno.EADDRINUSE, "another process is listening on", path)
    finally:
        probe.close()


class MilterServer(asyncio.AbstractServer):
    """The listening server plus its live connections.

    ``close()`` stops accepting (and removes the unix socket file);
    ``wait_closed()`` then gives open sessions ``shutdown_grace`` seconds to
    finish before cancelling them, so mail in flight is not cut needlessly.
    """

    def __init__(
        self, server: asyncio.Server, unix_path: str | None, shutdown_grace: float
    ) -> None:
        self._server = server
        self._unix_path = unix_path
        self._unix_inode: int | None = os.stat(unix_path).st_ino if unix_path else None
        self.shutdown_grace = shutdown_grace
        self.connections: set[asyncio.Task[Any]] = set()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets)

    def close(self) -> None:
        self._server.close()
        if self._unix_path is not None:
            with contextlib.suppress(OSError):
                if os.stat(self._unix_path).st_ino == self._unix_inode:
                    os.unlink(self._unix_path)
            self._unix_path = None

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._server.get_loop()

    def is_serving(self) -> bool:
        return self._server.is_serving()

    async def start_serving(self) -> None:
        await self._server.start_serving()

    async def serve_forever(self) -> None:
        await self._server.serve_forever()

    async def wait_closed(self) -> None:
        live = {t for t in self.connections if not t.done()}
        if live:
            _, pending = await asyncio.wait(live, timeout=self.shutdown_grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await self._server.wait_closed()


class _Connection:
    """Drives one socket: read, decode, hand packets to the session, write."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: MilterSession,
        *,
        read_timeout: float,
        idle_timeout: float,
        max_packet: int,
        read_size: int,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.session = session
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.decoder = PacketDecoder(max_packet)
        self.read_size = read_size

    async def run(self) -> None:
        peer = self.session.peer
        try:
            await self._loop()
        except ProtocolError as exc:
            log.warning("milter %s: protocol error, closing: %s", peer, exc)
        except TimeoutError:
            log.warning("milter %s: timed out waiting for the MTA, closing", peer)
        except (ConnectionError, OSError) as exc:
            log.warning("milter %s: connection error, closing: %s", peer, exc)
        except Exception:
            log.exception("milter %s: internal error, closing", peer)
        finally:
            await self._close()

    async def _loop(self) -> None:
        session = self.session
        while not session.closed:
            waiting_for_more = not session.negotiated or self.decoder.buffered > 0
            timeout = self.read_timeout if waiting_for_more else self.idle_timeout
            data = await asyncio.wait_for(self.reader.read(self.read_size), timeout)
            if not data:
                if self.decoder.buffered:
                    raise ProtocolError(f"EOF inside a packet ({self.decoder.buffered} bytes)")
                if session.negotiated:
                    log.debug("milter %s: MTA closed the connection", session.peer)
                else:
                    log.warning("milter %s: closed before negotiation", session.peer)
                return
            for packet in self.decoder.feed(data):
                reply = await session.handle(packet)
                if reply:
                    self.writer.write(reply)
                    await asyncio.wait_for(self.writer.drain(), self.read_timeout)
                if session.closed:
                    if self.decoder.buffered:
                        log.debug("milter %s: ignoring bytes after QUIT", session.peer)
                    return

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), self.read_timeout)


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"[{peer[0]}]:{peer[1]}"
    return str(writer.get_extra_info("sockname") or peer or "unix")


async def start_milter_server(
    policy: MilterPolicy,
    listen: str,
    *,
    read_timeout: float = 30.0,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    max_packet: int = DEFAULT_MAX_PACKET,
    on_policy_error: OnPolicyError = "continue",
    policy_timeout: float | None = 20.0,
    unix_mode: int = 0o666,
    shutdown_grace: float = 10.0,
    read_size: int = DEFAULT_READ_SIZE,
) -> MilterServer:
    """Listen on ``listen`` and serve the milter protocol with ``policy``.

    ``unix_mode`` defaults to 0o666 so Postfix can connect whatever group
    it runs as; restrict access through the directory if needed.
    ``policy_timeout`` should stay below Postfix's milter_command_timeout
    (30 s) so a slow policy yields ``on_policy_error`` instead of a dropped
    connection.  ``read_size`` is the socket read chunk (tests vary it).
    """
    if on_policy_error not in ("continue", "tempfail"):
        raise ValueError(f"on_policy_error must be continue or tempfail: {on_policy_error!r}")
    address = parse_listen(listen)
    server_ref: list[MilterServer] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None and server_ref:
            server_ref[0].connections.add(task)
            task.add_done_callback(server_ref[0].connections.discard)
        session = MilterSession(
            policy,
            on_policy_error=on_policy_error,
            policy_timeout=policy_timeout,
            peer=_peer_name(writer),
        )
        await _Connection(
            reader,
            writer,
            session,
            read_timeout=read_timeout,
            idle_timeout=idle_timeout,
            max_packet=max_packet,
            read_size=read_size,
        ).run()

    # The StreamReader limit only matters for readline(); reads are chunked.
    server: asyncio.Server
    if address.kind == "unix":
        assert address.path is not None
        _remove_stale_socket(address.path)
        server = await asyncio.start_unix_server(on_client, path=address.path)
        os.chmod(address.path, unix_mode)
    else:
        family = socket.AF_INET6 if address.kind == "inet6" else socket.AF_UNSPEC
        server = await asyncio.start_server(
            on_client, host=address.host, port=address.port, family=family, reuse_address=True
        )
    wrapped = MilterServer(server, address.path, shutdown_grace)
    server_ref.append(wrapped)
    for sock in server.sockets:
        log.info("milter listening on %s", sock.getsockname())
    return wrapped
