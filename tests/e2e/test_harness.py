"""Tests proving the Postfix/sink harness plumbing (no drossel code involved yet)."""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from harness.postfix import (
    AUTHOR,
    AUTHOR_DOMAIN,
    RECIPIENT,
    PostfixInstance,
    find_free_port,
    make_message,
)
from harness.sink import SmtpSink

pytestmark = pytest.mark.postfix


# ---------------------------------------------------------------------------------------
# Throw-away minimal milter (protocol v6): just enough to prove the plumbing.
# ---------------------------------------------------------------------------------------
class MiniMilter:
    """Answers every event with CONTINUE and end-of-headers with a fixed SMTP reply."""

    def __init__(self, reply: str | None = "450 4.7.230 test") -> None:
        self.reply = reply
        self.port = 0
        self.connections = 0
        self.commands: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1

        def send(cmd: bytes, data: bytes = b"") -> None:
            writer.write(struct.pack("!I", len(data) + 1) + cmd + data)

        try:
            while True:
                (length,) = struct.unpack("!I", await reader.readexactly(4))
                packet = await reader.readexactly(length)
                cmd = packet[:1]
                self.commands.append(cmd.decode())
                if cmd == b"O":  # OPTNEG: version 6, no actions, all protocol steps
                    send(b"O", struct.pack("!III", 6, 0, 0))
                elif cmd == b"N" and self.reply:  # end of headers -> SMFIR_REPLYCODE
                    send(b"y", self.reply.encode() + b"\0")
                elif cmd in (b"D", b"A"):  # macros, abort: no reply
                    pass
                elif cmd in (b"Q", b"K"):  # quit / quit-new-connection
                    break
                elif cmd == b"E":  # end of body (not reached after a reject)
                    send(b"a")
                else:  # C H M R T L B U ...
                    send(b"c")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def start(self) -> MiniMilter:
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            self._server.close()
            self._loop.run_until_complete(self._server.wait_closed())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="mini-milter", daemon=True)
        self._thread.start()
        assert ready.wait(5), "mini milter did not start"
        return self

    def stop(self) -> None:
        if self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._thread = None


@pytest.fixture
def mini_milter() -> Iterator[Callable[[str | None], MiniMilter]]:
    started: list[MiniMilter] = []

    def make(reply: str | None) -> MiniMilter:
        m = MiniMilter(reply).start()
        started.append(m)
        return m

    yield make
    for m in started:
        m.stop()


# ---------------------------------------------------------------------------------------
# Plain delivery paths
# ---------------------------------------------------------------------------------------
def test_client_to_receiving_postfix_to_sink(
    receiving_postfix: Callable[..., PostfixInstance], sink: SmtpSink
) -> None:
    recv = receiving_postfix()
    msg = make_message(
        AUTHOR,
        RECIPIENT,
        subject="direct",
        extra_headers=[
            (
                "Received",
                "from EXCH01.author.example (10.0.0.1) by EXCH02.author.example "
                "(10.0.0.2) with Microsoft SMTP Server id 15.2.1118.40; Mon, 1 Jan 2024 "
                "00:00:00 +0000",
            ),
            ("X-Drossel-Test", "intact"),
        ],
    )
    recv.send(msg, AUTHOR, [RECIPIENT])

    (got,) = sink.wait_for(1, timeout=15)
    assert got.mail_from == AUTHOR
    assert got.rcpt_tos == [RECIPIENT]
    assert got.header("Subject") == "direct"
    assert got.header("Message-ID") == msg["Message-ID"]
    assert got.header("X-Drossel-Test") == "intact"
    received = got.header_all("Received")
    assert any("Microsoft SMTP Server id 15.2.1118.40" in r for r in received)
    assert any(recv.hostname in r for r in received)  # Postfix added its own
    assert got.helo == recv.hostname  # smtp_helo_name per instance
    recv.wait_queue_empty(5)
    assert "status=sent" in recv.log_text()


def test_client_to_sending_to_receiving_to_sink(
    sending_postfix: Callable[..., PostfixInstance],
    receiving_postfix: Callable[..., PostfixInstance],
    postfix_factory: Callable[..., PostfixInstance],
    sink: SmtpSink,
) -> None:
    recv = receiving_postfix()
    # a third instance in the chain proves several instances run side by side
    middle = postfix_factory("middle", relayhost=recv.next_hop)
    send = sending_postfix(middle)
    send.send(make_message(AUTHOR, RECIPIENT, subject="chained"), AUTHOR, [RECIPIENT])

    (got,) = sink.wait_for(1, timeout=15)
    assert got.header("Subject") == "chained"
    hops = " ".join(got.header_all("Received"))
    for inst in (send, middle, recv):
        assert inst.hostname in hops

    instances = (send, middle, recv)
    assert len({i.master_pid() for i in instances}) == 3
    assert len({i.port for i in instances}) == 3
    for inst in instances:
        assert inst.is_running()
        assert f"{inst.syslog_name}/smtpd" in inst.log_text()
        others = [o.syslog_name for o in instances if o is not inst]
        assert not any(f"{o}/" in inst.log_text() for o in others)
    send.wait_queue_empty(5)


def test_sink_reply_codes_defer_then_deliver(
    receiving_postfix: Callable[..., PostfixInstance], sink: SmtpSink
) -> None:
    sink.set_reply("DATA", "451 4.3.0 sink says later")
    recv = receiving_postfix()
    recv.send(make_message(AUTHOR, RECIPIENT, subject="later"), AUTHOR, [RECIPIENT])
    (entry,) = recv.wait_deferred("4.3.0", timeout=15)
    assert "451 4.3.0 sink says later" in entry["recipients"][0]["delay_reason"]
    assert sink.messages == [] and sink.rejected

    sink.clear_replies()
    recv.flush_until(lambda: sink.messages, timeout=15)
    (got,) = sink.wait_for(1, timeout=15)
    assert got.header("Subject") == "later"
    recv.wait_queue_empty(10)


# ---------------------------------------------------------------------------------------
# Milter plumbing (throw-away milter; drossel's real milter is tested elsewhere)
# ---------------------------------------------------------------------------------------
def test_milter_450_keeps_mail_deferred_in_sending_queue(
    mini_milter: Callable[[str | None], MiniMilter],
    receiving_postfix: Callable[..., PostfixInstance],
    sending_postfix: Callable[..., PostfixInstance],
    sink: SmtpSink,
    author_sink: SmtpSink,
) -> None:
    milter = mini_milter("450 4.7.230 test")
    recv = receiving_postfix(milter.port)
    send = sending_postfix(recv)
    send.send(make_message(AUTHOR, RECIPIENT, subject="throttled"), AUTHOR, [RECIPIENT])

    q = send.wait_deferred("4.7.230", timeout=15)
    (entry,) = q
    assert entry["sender"] == AUTHOR
    reason = entry["recipients"][0]["delay_reason"]
    assert "450 4.7.230 test" in reason
    assert milter.connections >= 1
    assert {"O", "C", "M", "R", "N"} <= set(milter.commands)

    # retried quickly (queue_run_delay/backoff = 1-2 s) and still deferred after flush
    attempts = send.log_text().count("status=deferred")
    send.flush()
    send.wait_log("status=deferred", timeout=5, count=attempts + 1)
    assert "4.7.230" in send.deferred_reasons()[0]
    assert sink.messages == []
    assert author_sink.messages == []

    # once the milter lets it through (CONTINUE), the deferred message is delivered
    milter.reply = None
    send.flush_until(lambda: sink.messages, timeout=15)
    (got,) = sink.wait_for(1, timeout=15)
    assert got.header("Subject") == "throttled"
    send.wait_queue_empty(10)


def test_milter_550_bounces_to_author_with_dsn(
    mini_milter: Callable[[str | None], MiniMilter],
    receiving_postfix: Callable[..., PostfixInstance],
    sending_postfix: Callable[..., PostfixInstance],
    sink: SmtpSink,
    author_sink: SmtpSink,
) -> None:
    milter = mini_milter("550 5.7.230 blocked")
    recv = receiving_postfix(milter.port)
    send = sending_postfix(recv)
    send.send(make_message(AUTHOR, RECIPIENT, subject="blocked"), AUTHOR, [RECIPIENT])

    (ndr,) = author_sink.wait_for(1, timeout=15)
    assert ndr.mail_from == ""  # null sender
    assert ndr.rcpt_tos == [AUTHOR]
    assert ndr.message.get_content_type() == "multipart/report"
    (dsn,) = [p for p in ndr.message.walk() if p.get_content_type() == "message/delivery-status"]
    # per-message block first, then one block per recipient
    per_recipient = [block for block in dsn.iter_parts() if block.get("Final-Recipient")]
    assert [str(b["Status"]) for b in per_recipient] == ["5.7.230"]
    assert str(per_recipient[0]["Action"]) == "failed"
    assert RECIPIENT in str(per_recipient[0]["Final-Recipient"])
    assert "550 5.7.230 blocked" in ndr.text
    send.wait_queue_empty(10)
    assert sink.messages == []
    assert AUTHOR_DOMAIN in ndr.rcpt_tos[0]


@pytest.mark.parametrize(("default_action", "delivered"), [("accept", True), ("tempfail", False)])
def test_milter_unreachable_default_action(
    default_action: str,
    delivered: bool,
    receiving_postfix: Callable[..., PostfixInstance],
    sending_postfix: Callable[..., PostfixInstance],
    sink: SmtpSink,
) -> None:
    closed_port = find_free_port()  # nothing listens here
    recv = receiving_postfix(closed_port, milter_default_action=default_action)
    send = sending_postfix(recv)
    send.send(make_message(AUTHOR, RECIPIENT, subject="no milter"), AUTHOR, [RECIPIENT])
    if delivered:
        (got,) = sink.wait_for(1, timeout=15)
        assert got.header("Subject") == "no milter"
        send.wait_queue_empty(10)
    else:
        (entry,) = send.wait_deferred("4.7.1", timeout=15)
        assert "451" in entry["recipients"][0]["delay_reason"]
        assert sink.messages == []
    assert f"connect to Milter service inet:127.0.0.1:{closed_port}" in recv.log_text()


def test_queue_listing_counts_a_moving_message_once() -> None:
    """``postqueue -j`` can list a message in two queues while it moves (the cause of a flaky
    ``(entry,) = wait_deferred(...)``); the harness keeps one entry per queue id, the one that
    carries the delay reason."""
    from harness.postfix import dedupe_queue

    active = {"queue_name": "active", "queue_id": "4AB", "recipients": [{"address": "b@x"}]}
    deferred = {
        "queue_name": "deferred",
        "queue_id": "4AB",
        "recipients": [{"address": "b@x", "delay_reason": "451 4.7.1 Service unavailable"}],
    }
    other = {"queue_name": "active", "queue_id": "5CD", "recipients": []}
    assert dedupe_queue([deferred, active, other]) == [deferred, other]
    assert dedupe_queue([active, deferred]) == [deferred]
