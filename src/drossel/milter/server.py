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
packet uses the longer ``idle_timeout`` (default 330 s: above Postfix's
smtpd_timeout of 300 s, so Postfix gives up on a silent SMTP client first).

Resources: at most ``max_connections`` connections are served at once (more
are closed straight away and logged; Postfix applies its milter default
action), and each session keeps only a bounded part of each message (see
:class:`~drossel.milter.session.MilterSession`), so memory does not grow with
what senders write.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast

from drossel.milter.framing import DEFAULT_MAX_PACKET, Packet, PacketDecoder, ProtocolError
from drossel.milter.policy import MilterPolicy, OnPolicyError
from drossel.milter.session import (
    DEFAULT_MAX_KEPT_BYTES,
    DEFAULT_MAX_KEPT_HEADERS,
    MilterSession,
)

log = logging.getLogger("drossel.milter")

DEFAULT_IDLE_TIMEOUT = 330.0
DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_READ_SIZE = 65536
DEFAULT_BACKLOG = 1024

#: Linux's TCP_QUICKACK (None elsewhere: then ACKs are left to the kernel's timer).
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


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


def remove_stale_socket(path: str) -> None:
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
        self,
        server: asyncio.Server,
        unix_path: str | None,
        shutdown_grace: float,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self._server = server
        self._unix_path = unix_path
        self._unix_inode: int | None = os.stat(unix_path).st_ino if unix_path else None
        self.shutdown_grace = shutdown_grace
        #: the open connections (from connection_made to connection_lost)
        self.connections: set[_Connection] = set()
        self.max_connections = max_connections
        #: connections refused because ``max_connections`` were open
        self.refused = 0

    def admit(self) -> bool:
        """Whether one more connection may be served now (counts and logs a refusal)."""
        if len(self.connections) < self.max_connections:
            return True
        self.refused += 1
        if self.refused == 1 or self.refused % 1000 == 0:
            log.warning(
                "milter: %d connections open (max_connections); refusing new ones "
                "(%d refused so far), Postfix applies its milter default_action",
                len(self.connections),
                self.refused,
            )
        return False

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
        live = list(self.connections)
        if live:
            lost = {connection.lost(): connection for connection in live}
            _, pending = await asyncio.wait(lost, timeout=self.shutdown_grace)
            for future in pending:
                lost[future].cancel()
            if pending:
                await asyncio.wait(pending)
        await self._server.wait_closed()


_READ_BUFFERS = threading.local()


def _read_buffer(size: int) -> memoryview:
    """The socket read buffer of this thread's event loop, shared by its connections.

    The loop calls ``get_buffer``, reads into it and calls ``buffer_updated`` in one go, and
    the decoder copies what it keeps, so no connection needs the buffer between two reads:
    one per loop instead of one per connection (64 KiB each, 64 MiB for 1,000 idle MTA
    connections).  Per thread, because each event loop runs in its own."""
    buffers: dict[int, memoryview] | None = getattr(_READ_BUFFERS, "by_size", None)
    if buffers is None:
        buffers = _READ_BUFFERS.by_size = {}
    view = buffers.get(size)
    if view is None:
        view = buffers[size] = memoryview(bytearray(size))
    return view


class _Connection(asyncio.BufferedProtocol):
    """Drives one socket: read, decode, hand packets to the session, write.

    Built on a protocol rather than streams because the milter conversation is many tiny
    packets: everything is answered straight from the read callback, with one write per read,
    as long as the policy answers from memory (the usual case), and the connection is ended
    there too (QUIT, EOF, an error, a timeout).  Only a policy call that suspends (a database
    read) starts a task, which then handles the connection, in order, to its end: most
    connections never cost a task.  Timeouts use one timer per connection that is moved
    lazily instead of a timer (or task) per read.
    """

    def __init__(
        self,
        server: list[MilterServer],
        session_factory: Callable[[object], MilterSession],
        *,
        read_timeout: float,
        idle_timeout: float,
        max_packet: int,
        read_size: int,
        tcp: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._server = server
        #: a TCP connection on a system with TCP_QUICKACK (see _ack_now)
        self._tcp = tcp and _QUICKACK is not None
        self._session_factory = session_factory
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.decoder = PacketDecoder(max_packet)
        self.read_size = read_size
        self._view = _read_buffer(read_size)
        self._queue: deque[Packet | _Pending] = deque()
        self._queued_bytes = 0
        self._busy = False  # the task is handling queued packets (policy calls)
        self._reading = True
        self._write_paused = False
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        #: set once the socket is closed (made on demand: only a shutdown waits for it)
        self._lost: asyncio.Future[None] | None = None
        self._is_lost = False
        #: the connection is being closed (no more packets are handled)
        self._ended = False
        #: aborts a closing connection whose last replies the MTA does not read
        self._guard: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._loop = loop or asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.session: MilterSession | None = None
        self.task: asyncio.Task[None] | None = None
        #: the TCP socket to acknowledge at once after reads that need no reply (see _ack_now)
        self._quickack: Any = None

    # -- protocol callbacks --------------------------------------------------------

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport, hence the cast).
        transport = cast(asyncio.Transport, base)
        if self._server and not self._server[0].admit():
            self._error = ConnectionRefusedError("too many connections")
            transport.abort()
            return
        self.transport = transport
        if self._tcp:
            self._quickack = transport.get_extra_info("socket")
        self.session = self._session_factory(_Peer(transport))
        if self._server:
            self._server[0].connections.add(self)
        self._arm(self.read_timeout)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        if self._error is not None or self._ended or self.session is None or self.session.closed:
            return  # the connection is being closed; drop what is still arriving
        try:
            packets = self.decoder.feed(self._view[:nbytes])
        except ProtocolError as exc:
            self._fail(exc)
            return
        if self._quickack is not None and (
            not packets
            or packets[-1].command in self.session.unanswered
            or self.decoder.buffered  # the rest of a packet is due
        ):
            self._ack_now()
        if self._busy or self._queue:
            self._enqueue(packets)
            return
        self._handle_inline(packets)

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # keep the write side open: replies may still be due

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        if exc is not None and self._error is None:
            self._error = exc
        self._is_lost = True
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        if self._server:
            self._server[0].connections.discard(self)
        self._wake()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._set_reading(False)  # do not take more requests while replies back up
        self._arm(self.read_timeout)

    def resume_writing(self) -> None:
        self._write_paused = False
        self._set_reading(True)
        self._arm_for_next_read()

    # -- inline path ---------------------------------------------------------------

    def _handle_inline(self, packets: list[Packet]) -> None:
        session = self.session
        assert session is not None
        out: list[bytes] = []
        for index, packet in enumerate(packets):
            try:
                result = session.handle_nowait(packet)
                # A policy call (RCPT, end of headers) is answered here too, unless the
                # policy suspends ...
                reply = result if isinstance(result, bytes) else session.decide_now(result)
            except Exception as exc:
                self._write(out)
                self._fail(exc)
                return
            if reply is None:
                # ... else the task takes over from here, in order.
                self._write(out)
                self._busy = True
                self._queue.append(_PENDING)
                self._enqueue(packets[index + 1 :])
                if self.task is None:
                    self.task = self._loop.create_task(self.run())
                else:
                    self._wake()
                return
            if reply:
                out.append(reply)
            if session.closed:
                if index + 1 < len(packets) or self.decoder.buffered:
                    log.debug("milter %s: ignoring bytes after QUIT", session.peer)
                self._write(out)
                self._wake()
                return
        if out:
            self._write(out)
        self._arm_for_next_read()

    def _ack_now(self) -> None:
        """Acknowledge what was just read at once instead of after the delayed-ACK timer.

        Most of what Postfix sends needs no reply (macros, envelope, each header: SMFIP_NR_*),
        so no reply carries our ACK back, and the kernel delays it by up to 40 ms.  Postfix
        writes each packet as its own small segment without TCP_NODELAY, so Nagle holds its
        next packet until that ACK arrives: a stall per header.  TCP_QUICKACK sends the
        pending ACK now (the kernel clears the flag again, hence per read).  Unix sockets have
        neither mechanism.  Called as soon as a read is decoded, before its packets are
        handled, when the read ends with a packet that gets no reply (or inside a packet):
        Postfix's next packet then travels while this one is handled.
        """
        try:
            self._quickack.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        except OSError:
            self._quickack = None

    def _write(self, out: list[bytes]) -> None:
        if out and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _enqueue(self, packets: list[Packet]) -> None:
        self._queue.extend(packets)
        self._queued_bytes += sum(len(p.payload) for p in packets)
        if self._queued_bytes > self.read_size:
            self._set_reading(False)  # bounded memory while a policy call is pending

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._set_reading(False)
        self._wake()

    def _set_reading(self, on: bool) -> None:
        if on == self._reading or self.transport is None or self.transport.is_closing():
            return
        self._reading = on
        if on:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    def _wake(self) -> None:
        """Something changed (QUIT, EOF, an error): the task, if any, takes it from here;
        without one the connection is ended right here when it is over."""
        if self.task is not None:
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif not self._ended and self.session is not None:
            self._settle()

    def _settle(self) -> None:
        """:meth:`_loop_`'s decisions for a connection without a task and without queued
        packets: end it on an error, after QUIT or at EOF, else leave it open."""
        session = self.session
        assert session is not None
        if self._error is not None:
            self._log_end(self._error)
        elif not session.closed:
            if not self._eof:
                return
            try:
                self._check_eof(session)
            except ProtocolError as exc:
                self._log_end(exc)
        self._end()

    def _check_eof(self, session: MilterSession) -> None:
        """The MTA closed its side: fine between packets, a protocol error inside one."""
        if self.decoder.buffered:
            raise ProtocolError(f"EOF inside a packet ({self.decoder.buffered} bytes)")
        if session.negotiated:
            log.debug("milter %s: MTA closed the connection", session.peer)
        else:
            log.warning("milter %s: closed before negotiation", session.peer)

    def _log_end(self, exc: BaseException) -> None:
        peer = self.session.peer if self.session is not None else "-"
        if isinstance(exc, ProtocolError):
            log.warning("milter %s: protocol error, closing: %s", peer, exc)
        elif isinstance(exc, TimeoutError):
            log.warning("milter %s: timed out waiting for the MTA, closing", peer)
        elif isinstance(exc, (ConnectionError, OSError)):
            log.warning("milter %s: connection error, closing: %s", peer, exc)
        else:
            log.error("milter %s: internal error, closing", peer, exc_info=exc)

    def _end(self) -> None:
        """Close the connection: our replies still buffered go out first, unless the MTA does
        not read them within ``read_timeout`` (then the connection is aborted)."""
        if self._ended:
            return
        self._ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        transport = self.transport
        if transport is None or self._is_lost:
            return
        with contextlib.suppress(Exception):
            transport.close()
            if transport.get_write_buffer_size():  # connection_lost comes later, not here
                self._guard = self._loop.call_later(self.read_timeout, transport.abort)

    def lost(self) -> asyncio.Future[None]:
        """A future set once the socket is closed."""
        if self._lost is None:
            self._lost = self._loop.create_future()
            if self._is_lost:
                self._lost.set_result(None)
        return self._lost

    def cancel(self) -> None:
        """Shutdown: stop the connection's policy call, if any, and close it."""
        if self.task is not None and not self.task.done():
            self.task.cancel()  # its end closes the connection
        else:
            self._end()

    # -- timeouts ------------------------------------------------------------------

    def _arm_for_next_read(self) -> None:
        session = self.session
        waiting_for_more = session is None or not session.negotiated or self.decoder.buffered
        self._arm(self.read_timeout if waiting_for_more else self.idle_timeout)

    def _arm(self, timeout: float) -> None:
        self._deadline = deadline = self._loop.time() + timeout
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._ended:
            return
        if self._busy:
            return  # the policy has its own timeout; re-armed when the task is done
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
            return
        self._fail(TimeoutError())

    # -- the task ------------------------------------------------------------------

    async def run(self) -> None:
        """The connection from its first suspended policy call to its end."""
        try:
            await self._loop_()
        except Exception as exc:
            self._log_end(exc)
        finally:
            self._end()

    async def _loop_(self) -> None:
        session = self.session
        assert session is not None
        while True:
            if self._queue:
                await self._drain_queue(session)
                continue
            if self._error is not None:
                raise self._error
            if session.closed:
                return
            if self._eof:
                self._check_eof(session)
                return
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def _drain_queue(self, session: MilterSession) -> None:
        """Handle queued packets in order (the first is a policy call); one write per batch."""
        out: list[bytes] = []
        try:
            while self._queue:
                item = self._queue.popleft()
                if isinstance(item, _Pending):
                    self._write(out)  # earlier replies go out before the policy runs
                    out = []
                    reply = await session.resume()
                else:
                    self._queued_bytes -= len(item.payload)
                    reply = await session.handle(item)
                if reply:
                    out.append(reply)
                if session.closed:
                    if self._queue or self.decoder.buffered:
                        log.debug("milter %s: ignoring bytes after QUIT", session.peer)
                    self._queue.clear()
                    return
        finally:
            self._write(out)
            if not self._queue:
                self._queued_bytes = 0
                self._busy = False
                if not self._write_paused:
                    self._set_reading(True)
                self._arm_for_next_read()
        if self._write_paused:
            await self._wait_writable()

    async def _wait_writable(self) -> None:
        """Wait until the MTA reads our replies (bounded by the timer's read timeout)."""
        while self._write_paused and self._error is None and not self._eof:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class _Pending:
    """Queue marker: the session holds a suspended policy call for the task to finish."""

    __slots__ = ()


_PENDING = _Pending()


class _Peer:
    """The MTA end of a connection, for log lines: worked out when first logged (asking the
    socket costs system calls, and most connections never log a line of their own)."""

    __slots__ = ("_text", "_transport")

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self._transport: asyncio.BaseTransport | None = transport
        self._text = "-"

    def __str__(self) -> str:
        transport, self._transport = self._transport, None
        if transport is not None:
            with contextlib.suppress(Exception):
                self._text = _peer_name(transport)
        return self._text


def _peer_name(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"[{peer[0]}]:{peer[1]}"
    return str(transport.get_extra_info("sockname") or peer or "unix")


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
    backlog: int = DEFAULT_BACKLOG,
    strip_headers: Iterable[str] = (),
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_kept_headers: int = DEFAULT_MAX_KEPT_HEADERS,
    max_kept_bytes: int = DEFAULT_MAX_KEPT_BYTES,
    recipient_step: bool = True,
    answer_at_end_of_message: bool = False,
    sock: socket.socket | None = None,
) -> MilterServer:
    """Listen on ``listen`` and serve the milter protocol with ``policy``.

    ``unix_mode`` defaults to 0o666 so Postfix can connect whatever group
    it runs as; restrict access through the directory if needed.
    ``policy_timeout`` should stay below Postfix's milter_command_timeout
    (30 s) so a slow policy yields ``on_policy_error`` instead of a dropped
    connection.  ``read_size`` is the socket read chunk (tests vary it).  ``backlog``
    is the listen queue: a busy Postfix opens a milter connection per SMTP session.
    ``strip_headers`` names headers whose incoming copies every session deletes (see
    :class:`~drossel.milter.session.MilterSession`), as do the header limits and
    ``recipient_step`` (False: RCPT is negotiated away, ``policy.on_recipient`` unused) and
    ``answer_at_end_of_message`` (True: the verdict goes out at end of message).
    ``sock``: serve this already listening socket (bound for ``listen`` by
    :mod:`drossel.milter.workers`) instead of binding; its owner removes a unix socket file.
    """
    if on_policy_error not in ("continue", "tempfail"):
        raise ValueError(f"on_policy_error must be continue or tempfail: {on_policy_error!r}")
    address = parse_listen(listen)
    strip = tuple(strip_headers)
    server_ref: list[MilterServer] = []

    sessions = MilterSession(
        policy,
        on_policy_error=on_policy_error,
        policy_timeout=policy_timeout,
        strip_headers=strip,
        max_kept_headers=max_kept_headers,
        max_kept_bytes=max_kept_bytes,
        recipient_step=recipient_step,
        answer_at_end_of_message=answer_at_end_of_message,
    )

    loop = asyncio.get_running_loop()

    def new_connection() -> _Connection:
        return _Connection(
            server_ref,
            sessions.spawn,
            read_timeout=read_timeout,
            idle_timeout=idle_timeout,
            max_packet=max_packet,
            read_size=read_size,
            tcp=address.kind != "unix",
            loop=loop,
        )

    server: asyncio.Server
    unix_path = address.path
    if sock is not None:
        unix_path = None
        if address.kind == "unix":
            server = await loop.create_unix_server(new_connection, sock=sock)
        else:
            server = await loop.create_server(new_connection, sock=sock)
    elif address.kind == "unix":
        assert address.path is not None
        remove_stale_socket(address.path)
        server = await loop.create_unix_server(new_connection, path=address.path, backlog=backlog)
        os.chmod(address.path, unix_mode)
    else:
        family = socket.AF_INET6 if address.kind == "inet6" else socket.AF_UNSPEC
        assert address.port is not None
        server = await loop.create_server(
            new_connection,
            host=address.host,
            port=address.port,
            family=family,
            reuse_address=True,
            backlog=backlog,
        )
    wrapped = MilterServer(server, unix_path, shutdown_grace, max_connections)
    server_ref.append(wrapped)
    for sock in server.sockets:
        log.info("milter listening on %s", sock.getsockname())
    return wrapped
