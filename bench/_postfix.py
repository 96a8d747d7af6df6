"""Postfix throughput driver shared by the benchmarks (not a test).

    smtp-source (N sessions) --> private Postfix on 127.0.0.1 (+ optional milter)
                             --> smtp-sink (Postfix's, exits after N messages)

:func:`run_postfix_throughput` starts a throw-away Postfix instance (see
``tests/harness/postfix.py``) and Postfix's ``smtp-sink``, injects ``messages`` messages
with ``smtp-source`` over ``sessions`` parallel SMTP sessions, and measures from the start
of injection until ``smtp-sink`` has received the last message (``smtp-sink -M N`` exits
then, so the end point is exact).  Everything runs on loopback and is torn down afterwards.

Needs root (Postfix's master and smtp-sink/-u) and the Postfix package (smtp-source and
smtp-sink are shipped by Debian's ``postfix`` package in /usr/sbin).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_TESTS_DIR = Path(__file__).resolve().parents[1] / "tests"
if str(_TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(_TESTS_DIR))

from harness.postfix import (  # noqa: E402
    PostfixInstance,
    find_free_port,
    make_traversable,
    unavailable_reason,
)

__all__ = [
    "exchange_message",
    "run_postfix_throughput",
    "smtp_source_command",
    "unavailable_reason",
]

#: A current Exchange SE build (in drossel's catalog) so a milter in front lets mail pass.
DEFAULT_EXCHANGE_BUILD = "15.2.2562.53"
SENDER = "bench@contoso.example"
RECIPIENT = "rcpt@fabrikam.example"


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/lib/postfix/sbin")
    if not found:
        raise FileNotFoundError(f"{name} not found (Debian ships it in the postfix package)")
    return found


def exchange_message(build: str = DEFAULT_EXCHANGE_BUILD, body_lines: int = 20) -> str:
    """Message text (headers + body, LF line ends) as an Exchange server would relay it."""
    headers = [
        "Received: from EXCH01.contoso.example (10.1.2.3) by EXCH02.contoso.example",
        " (10.1.2.4) with Microsoft SMTP Server (version=TLS1_2,",
        " cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id",
        f" {build}; Tue, 3 Nov 2026 10:00:00 +0100",
        "Received: from EXCH01.contoso.example ([fe80::1c2d:3e4f:5a6b:7c8d]) by",
        " EXCH01.contoso.example ([fe80::1c2d:3e4f:5a6b:7c8d%12]) with mapi id",
        f" {build}; Tue, 3 Nov 2026 10:00:00 +0100",
        f"From: Bench Sender <{SENDER}>",
        f"To: <{RECIPIENT}>",
        "Subject: drossel throughput benchmark",
        "Date: Tue, 3 Nov 2026 10:00:00 +0100",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "X-MS-Exchange-Organization-AuthSource: EXCH01.contoso.example",
        "X-MS-Exchange-Organization-AuthAs: Internal",
        "X-MS-Has-Attach:",
    ]
    body = [f"Line {i:03d} of the benchmark message body. " + "x" * 40 for i in range(body_lines)]
    return "\n".join([*headers, "", *body]) + "\n"


def _log_counts(text: str) -> dict[str, int]:
    return {
        "sent": len(re.findall(r"status=sent", text)),
        "deferred": len(re.findall(r"status=deferred", text)),
        "bounced": len(re.findall(r"status=bounced", text)),
        "milter_reject": text.count("milter-reject:"),
        "smtpd_reject": len(re.findall(r"smtpd\[\d+\]: NOQUEUE: reject", text)),
    }


def smtp_source_command(
    smtp_source: str,
    target: str,
    messages: int,
    sessions: int,
    msg_file: Path,
    *,
    reuse_connections: bool = False,
) -> list[str]:
    """The smtp-source command line every benchmark uses (same load for every variant)."""
    cmd = [
        smtp_source,
        "-s", str(sessions),
        "-m", str(messages),
        "-f", SENDER,
        "-t", RECIPIENT,
        "-M", "EXCH02.contoso.example",
        "-F", str(msg_file),
        "-A",  # keep going when a reply is not 2xx (e.g. a throttling milter)
    ]  # fmt: skip
    if reuse_connections:
        cmd.append("-d")  # many messages per connection
    cmd.append(target)
    return cmd


def busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (``/proc/stat``: user, nice, system, irq,
    softirq; not idle, I/O wait or time stolen by the hypervisor)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def run_postfix_throughput(
    milter: str | None = None,
    messages: int = 10000,
    sessions: int = 20,
    *,
    milter_default_action: str = "tempfail",
    exchange_build: str = DEFAULT_EXCHANGE_BUILD,
    message_text: str | None = None,
    reuse_connections: bool = False,
    timeout: float | None = None,
    keep_dir: bool = False,
    main: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Measure end-to-end Postfix throughput (messages/s), optionally through a milter.

    :param milter: ``smtpd_milters`` value, e.g. ``inet:127.0.0.1:10025``; None = no milter.
    :param messages: messages to inject (and wait for at the sink).
    :param sessions: parallel smtp-source SMTP sessions.
    :param reuse_connections: ``smtp-source -d`` (many messages per connection);
        default is one connection (and thus one milter conversation) per message.
    :param timeout: give up after this many seconds (default scales with ``messages``).
    :returns: dict with ``msgs_per_s`` (injection start until the sink counted all
        messages), ``machine_cpu_ms_per_msg`` (the CPU time of the whole machine in that
        span, per message: Postfix, the load generator, the sink and the milter), ``seconds``,
        ``submit_seconds``, ``delivered`` and Postfix log counts.
        ``complete`` is False when the sink did not get every message before ``timeout``
        (e.g. a milter rejected some); ``msgs_per_s`` then uses the delivered count.

    Note: ``smtp-sink -M N`` exits as soon as it has read the N-th message's final "."
    (before answering), so Postfix logs that last delivery as ``status=deferred`` (lost
    connection) and ``postfix_log["sent"]`` is N-1 for a complete run.
    """
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    smtp_source, smtp_sink = _tool("smtp-source"), _tool("smtp-sink")
    if timeout is None:
        timeout = max(60.0, messages / 50)

    base = Path(tempfile.mkdtemp(prefix="drossel-bench-"))
    base.chmod(0o755)
    make_traversable(base)
    msg_file = base / "message.eml"
    msg_file.write_text(message_text or exchange_message(exchange_build))

    sink_port = find_free_port()
    sink_out = base / "smtp-sink.out"
    main_cf = {
        # realistic defaults (in_flow_delay etc.), but quick retries if anything defers
        "queue_run_delay": "1s",
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "2s",
        **(main or {}),
    }
    pf = PostfixInstance(
        base,
        "bench",
        relayhost=f"[127.0.0.1]:{sink_port}",
        milter=milter,
        milter_default_action=milter_default_action,
        fast_retry=False,
        main=main_cf,
    )
    sink_proc: subprocess.Popen[bytes] | None = None
    result: dict[str, Any] = {
        "milter": milter,
        "messages": messages,
        "sessions": sessions,
        "reuse_connections": reuse_connections,
        "exchange_build": exchange_build if message_text is None else None,
    }
    try:
        with sink_out.open("wb") as out:
            # -u: smtp-sink refuses to run as root without dropping privileges.
            # -M N: exit after N messages -> exact end of the measurement.
            sink_proc = subprocess.Popen(
                [smtp_sink, "-u", "postfix", "-M", str(messages), f"127.0.0.1:{sink_port}", "256"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        pf.start()
        _wait_port(sink_port, 10, sink_proc)

        cmd = smtp_source_command(
            smtp_source,
            f"127.0.0.1:{pf.port}",
            messages,
            sessions,
            msg_file,
            reuse_connections=reuse_connections,
        )

        busy0 = busy_seconds()
        t0 = time.perf_counter()
        source = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        t_submit = time.perf_counter() - t0
        if source.returncode != 0:
            raise RuntimeError(f"smtp-source failed ({source.returncode}): {source.stderr}")
        complete = _wait_sink(sink_proc, pf, deadline=t0 + timeout)
        elapsed = time.perf_counter() - t0
        busy = busy_seconds() - busy0

        counts = _log_counts(pf.log_text())
        delivered = messages if complete else counts["sent"]
        result.update(
            {
                "complete": complete,
                "delivered": delivered,
                "seconds": round(elapsed, 3),
                "submit_seconds": round(t_submit, 3),
                "msgs_per_s": round(delivered / elapsed, 1) if elapsed else 0.0,
                # every process's CPU on the machine while the messages went through
                "machine_cpu_ms_per_msg": round(1000 * busy / delivered, 3) if delivered else 0.0,
                "submit_msgs_per_s": round(messages / t_submit, 1) if t_submit else 0.0,
                "postfix_log": counts,
            }
        )
        if keep_dir:
            result["dir"] = str(base)
        return result
    finally:
        pf.stop()
        if sink_proc is not None and sink_proc.poll() is None:
            sink_proc.terminate()
            try:
                sink_proc.wait(5)
            except subprocess.TimeoutExpired:
                sink_proc.kill()
                sink_proc.wait(5)
        if not keep_dir:
            shutil.rmtree(base, ignore_errors=True)


def _queue_has_mail(pf: PostfixInstance) -> bool:
    """True if any message file is in incoming/active/deferred (stops at the first)."""

    def walk(path: Path) -> bool:
        try:
            with os.scandir(path) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        if walk(Path(entry.path)):
                            return True
                    else:
                        return True
        except FileNotFoundError:
            pass
        return False

    return any(walk(pf.queue_dir / q) for q in ("incoming", "active", "deferred"))


def _wait_sink(sink_proc: subprocess.Popen[bytes], pf: PostfixInstance, deadline: float) -> bool:
    """Wait for smtp-sink to exit (all messages received) -> True.

    Returns False at ``deadline`` or early when Postfix has nothing left to deliver
    (queue empty twice in a row) although the sink is still waiting, e.g. because a
    milter rejected messages at SMTP time.
    """
    empty_seen = 0
    next_queue_check = time.perf_counter() + 1.0
    while time.perf_counter() < deadline:
        try:
            sink_proc.wait(0.05)
            return True
        except subprocess.TimeoutExpired:
            pass
        now = time.perf_counter()
        if now >= next_queue_check:
            next_queue_check = now + 1.0
            empty_seen = 0 if _queue_has_mail(pf) else empty_seen + 1
            if empty_seen >= 2:
                return sink_proc.poll() is not None
    return sink_proc.poll() is not None


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"smtp-sink exited early ({proc.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"smtp-sink not listening on {port} after {timeout}s")
