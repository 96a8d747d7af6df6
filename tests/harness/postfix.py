"""Private Postfix instances on loopback for end-to-end tests and benchmarks.

Every :class:`PostfixInstance` gets its own ``config_directory``, ``queue_directory``,
``data_directory`` and ``maillog_file`` below ``base_dir`` and one smtpd listening on
``127.0.0.1:<port>``.  Nothing is read from or written to ``/etc/postfix/main.cf``; all
Postfix commands are run with ``-c <config_directory>``.

Postfix's master must run as root (it drops privileges to ``mail_owner=postfix``), so
:func:`unavailable_reason` reports a reason to skip when postfix is missing or we are not
root.  All waits are bounded polls.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import smtplib
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

__all__ = [
    "AUTHOR",
    "AUTHOR_DOMAIN",
    "POSTFIX_SBIN",
    "RECIPIENT",
    "PostfixError",
    "PostfixInstance",
    "find_free_port",
    "instance_directory",
    "make_message",
    "make_traversable",
    "send_message",
    "unavailable_reason",
]

POSTFIX_SBIN = Path("/usr/sbin")

#: Addresses used by the e2e topology: mail for AUTHOR_DOMAIN (e.g. NDRs) goes to the
#: "author mailbox" sink, everything else to the final sink.
AUTHOR_DOMAIN = "author.example"
AUTHOR = f"alice@{AUTHOR_DOMAIN}"
RECIPIENT = "bob@remote.example"


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(POSTFIX_SBIN))
    if not found:
        raise FileNotFoundError(name)
    return found


def unavailable_reason() -> str | None:
    """Why private Postfix instances cannot run here (None when they can)."""
    for tool in ("postfix", "postconf", "postqueue"):
        try:
            _tool(tool)
        except FileNotFoundError:
            return f"Postfix is not installed ({tool} not found; apt-get install postfix)"
    try:
        daemon_dir = subprocess.run(
            [_tool("postconf"), "-d", "-h", "daemon_directory"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError) as exc:
        return f"postconf does not work: {exc}"
    if not Path(daemon_dir, "master").exists():
        return f"Postfix master not found in {daemon_dir}"
    if os.geteuid() != 0:
        return "private Postfix instances need root (master runs as root, drops to postfix)"
    try:
        import pwd

        pwd.getpwnam("postfix")
    except KeyError:
        return "system user 'postfix' does not exist"
    return None


#: Which listing of a message wins when ``postqueue -j`` shows it twice: the queue it moves to.
_QUEUE_ORDER = {"maildrop": 0, "incoming": 1, "active": 2, "hold": 3, "deferred": 4}


def dedupe_queue(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per queue id.  ``postqueue -j`` walks the queue directories one after another,
    so a message moving between them (active -> deferred) can be listed twice; keep the listing
    with a delay reason, else the later queue's."""

    def rank(entry: dict[str, Any]) -> tuple[int, int]:
        has_reason = any(r.get("delay_reason") for r in entry.get("recipients", []))
        return (int(has_reason), _QUEUE_ORDER.get(entry.get("queue_name", ""), -1))

    chosen: dict[str, dict[str, Any]] = {}
    for entry in entries:
        key = str(entry.get("queue_id", id(entry)))
        if key not in chosen or rank(entry) >= rank(chosen[key]):
            chosen[key] = entry
    return list(chosen.values())


def find_free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host`` (small race window, fine for tests)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def make_traversable(path: Path, stop_at: Path = Path("/")) -> None:
    """Add o+x (search) to ``path`` and its ancestors so the postfix user can reach it.

    pytest's tmp dirs live below ``/tmp/pytest-of-root`` which is mode 0700; Postfix
    daemons running as ``postfix`` must be able to reach the queue and data directory.
    """
    path = path.resolve()
    for p in [path, *path.parents]:
        if p == stop_at or p == Path("/"):
            break
        mode = p.stat().st_mode
        want = mode | stat.S_IXOTH | stat.S_IXGRP
        if mode != want:
            p.chmod(stat.S_IMODE(want))


@contextlib.contextmanager
def instance_directory(prefix: str = "drossel-pf-") -> Iterator[Path]:
    """A directory for Postfix instances outside pytest's tmp tree, removed afterwards.

    The unprivileged ``postfix`` user must traverse every ancestor, and any pytest session
    starting on the machine resets ``/tmp/pytest-of-root`` to mode 0700, which breaks
    instances that live below it (``master.lock: Permission denied`` at start).
    """
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    make_traversable(base)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


class PostfixError(RuntimeError):
    pass


# master.cf without chroot; the smtpd line is prepended per instance.
_MASTER_CF_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

#: The TLS session-cache/PRNG manager; smtpd disables TLS without it (``TLS=True``).
TLSMGR_SERVICE = "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n"


def _inline_map(entries: Mapping[str, str]) -> str:
    for k, v in entries.items():
        if any(c in k + v for c in ",{}= \t"):
            raise ValueError(f"unsupported character in inline map entry {k!r}={v!r}")
    return "inline:{ " + ", ".join(f"{k}={v}" for k, v in entries.items()) + " }"


class PostfixInstance:
    """A private Postfix instance listening on ``127.0.0.1:port``.

    :param base_dir: directory that will hold ``etc/``, ``queue/``, ``data/``, ``log/``.
    :param name: short instance name; becomes ``syslog_name=postfix-<name>`` and
        ``myhostname=<name>.drossel.test`` (unless ``hostname`` is given).
    :param relayhost: next hop for all mail, e.g. ``[127.0.0.1]:2525``.
    :param transports: per-domain transport map, e.g.
        ``{"author.example": "smtp:[127.0.0.1]:2526"}`` (becomes an ``inline:`` map).
    :param milter: ``smtpd_milters`` value (e.g. ``inet:127.0.0.1:9999``) or None.
    :param milter_default_action: ``accept``/``tempfail``/``reject``/``quarantine``.
    :param main: extra/overriding main.cf parameters.
    :param smtpd_options: ``-o`` overrides for the smtpd service in master.cf.
    :param tls: also run ``tlsmgr`` (needed for ``smtpd_tls_security_level`` other than none).
    """

    def __init__(
        self,
        base_dir: Path,
        name: str,
        *,
        relayhost: str | None = None,
        transports: Mapping[str, str] | None = None,
        milter: str | None = None,
        milter_default_action: str = "tempfail",
        port: int | None = None,
        hostname: str | None = None,
        bounce_queue_lifetime: str = "1h",
        maximal_queue_lifetime: str = "1h",
        main: Mapping[str, str | int] | None = None,
        smtpd_options: Mapping[str, str] | None = None,
        fast_retry: bool = True,
        tls: bool = False,
    ) -> None:
        self.name = name
        self.tls = tls
        self.base_dir = Path(base_dir).resolve() / name
        self.host = "127.0.0.1"
        self.port = port or find_free_port(self.host)
        self.hostname = hostname or f"{name}.drossel.test"
        self.syslog_name = f"postfix-{name}"
        self.config_dir = self.base_dir / "etc"
        self.queue_dir = self.base_dir / "queue"
        self.data_dir = self.base_dir / "data"
        self.log_dir = self.base_dir / "log"
        self.log_file = self.log_dir / "maillog"
        self.relayhost = relayhost
        self.transports = dict(transports or {})
        self.milter = milter
        self.milter_default_action = milter_default_action
        self.bounce_queue_lifetime = bounce_queue_lifetime
        self.maximal_queue_lifetime = maximal_queue_lifetime
        self.fast_retry = fast_retry
        self.extra_main = dict(main or {})
        self.smtpd_options = dict(smtpd_options or {})
        self._started = False

    def __repr__(self) -> str:
        return f"<PostfixInstance {self.name} {self.host}:{self.port} {self.base_dir}>"

    # -- configuration ---------------------------------------------------------------
    @property
    def next_hop(self) -> str:
        """Postfix next-hop notation to relay to this instance's smtpd."""
        return f"[{self.host}]:{self.port}"

    def main_cf(self) -> dict[str, str]:
        cf: dict[str, str] = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "syslog_name": self.syslog_name,
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": str(self.log_dir),
            "inet_interfaces": self.host,
            "inet_protocols": "ipv4",
            "myhostname": self.hostname,
            "mydomain": "drossel.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "relay_domains": "",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            "smtp_helo_name": "$myhostname",
            "smtpd_banner": "$myhostname ESMTP drossel-test",
            "smtpd_peername_lookup": "no",
            "local_transport": "error:local delivery disabled in test instance",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "smtp_connect_timeout": "5s",
            "bounce_queue_lifetime": self.bounce_queue_lifetime,
            "maximal_queue_lifetime": self.maximal_queue_lifetime,
        }
        if self.fast_retry:
            cf.update(
                {
                    "queue_run_delay": "1s",
                    "minimal_backoff_time": "1s",
                    "maximal_backoff_time": "2s",
                    # don't penalise a next hop after one failure (tests flip sinks/milters)
                    "smtp_destination_rate_delay": "0s",
                    "default_destination_concurrency_failed_cohort_limit": "100",
                    "in_flow_delay": "0",
                }
            )
        if self.relayhost:
            cf["relayhost"] = self.relayhost
        if self.transports:
            cf["transport_maps"] = _inline_map(self.transports)
        if self.milter:
            cf.update(
                {
                    "smtpd_milters": self.milter,
                    "milter_default_action": self.milter_default_action,
                    "milter_protocol": "6",
                    "milter_connect_timeout": "5s",
                    "milter_command_timeout": "10s",
                    "milter_content_timeout": "15s",
                }
            )
        cf.update({k: str(v) for k, v in self.extra_main.items()})
        return cf

    def master_cf(self) -> str:
        opts = "".join(f"\n  -o {k}={v}" for k, v in self.smtpd_options.items())
        smtpd = f"{self.host}:{self.port} inet n - n - - smtpd{opts}\n"
        return smtpd + _MASTER_CF_SERVICES + (TLSMGR_SERVICE if self.tls else "")

    def write_config(self) -> None:
        for d in (self.config_dir, self.queue_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        self.base_dir.chmod(0o755)
        make_traversable(self.base_dir)
        lines = [f"{k} = {v}" for k, v in self.main_cf().items()]
        (self.config_dir / "main.cf").write_text("\n".join(lines) + "\n")
        (self.config_dir / "master.cf").write_text(self.master_cf())
        # Postfix refuses to read a table/config file whose mtime is "now" (it sleeps in
        # 300 ms steps until the file looks stable, seconds per command).  Backdate them.
        past = time.time() - 10
        for f in ("main.cf", "master.cf"):
            os.utime(self.config_dir / f, (past, past))

    # -- commands --------------------------------------------------------------------
    def run(
        self, tool: str, *args: str, timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a Postfix command-line tool against this instance (``-c config_dir``)."""
        cmd = [_tool(tool), "-c", str(self.config_dir), *args]
        env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if check and proc.returncode != 0:
            raise PostfixError(
                f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n"
                f"--- {self.log_file} ---\n{self.log_tail()}"
            )
        return proc

    def postconf(self, *names: str) -> dict[str, str]:
        out = self.run("postconf", *names).stdout
        result = {}
        for line in out.splitlines():
            k, _, v = line.partition(" = ")
            result[k.strip()] = v
        return result

    def start(self, timeout: float = 30.0) -> PostfixInstance:
        if self._started:
            return self
        self.write_config()
        # creates the queue sub-directories and data_directory with the right owners
        self.run("postfix", "check", timeout=timeout)
        self._started = True  # from here on stop() must clean up, even if start fails
        self.run("postfix", "start", timeout=timeout)
        self._wait_listening(timeout)
        return self

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: OSError | None = None
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=2):
                    return
            except OSError as exc:
                last = exc
                time.sleep(0.05)
        raise PostfixError(f"{self}: smtpd not listening after {timeout}s: {last}")

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")

    def is_running(self) -> bool:
        pid = self.master_pid()
        return pid is not None and self._alive(pid)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the master (like ``postfix stop`` but polling fast); SIGKILL as fallback.

        Idempotent and safe to call after a failed start.
        """
        if not self._started:
            return
        self._started = False
        pid = self.master_pid()
        if pid is None or not self._alive(pid):
            return
        # Same as postfix-script stop: SIGTERM to the master, which terminates its children.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._alive(pid):
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> PostfixInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- queue -----------------------------------------------------------------------
    def flush(self) -> None:
        """Attempt to deliver all queued mail now (``postqueue -f``)."""
        self.run("postqueue", "-f")

    def flush_until(self, done: Callable[[], object], timeout: float = 15.0) -> None:
        """Flush, and again every second, until ``done()`` is true.

        A deferral shows in the queue while the delivery agent is still finishing; a flush
        in that moment is skipped by qmgr ("still being delivered") and the message would
        wait for its retry time, so one flush right after a deferral is not enough.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.flush()
            step = time.monotonic() + 1.0
            while time.monotonic() < min(step, deadline):
                if done():
                    return
                time.sleep(0.05)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name}: not done within {timeout}s after flushing")

    def queue(self) -> list[dict[str, Any]]:
        """Parsed ``postqueue -j``: one dict per message (queue_name, recipients with
        delay_reason, ...)."""
        out = self.run("postqueue", "-j").stdout
        return dedupe_queue(json.loads(line) for line in out.splitlines() if line.strip())

    def deferred_reasons(self) -> list[str]:
        return [
            r.get("delay_reason", "")
            for m in self.queue()
            for r in m.get("recipients", [])
            if r.get("delay_reason")
        ]

    def wait_queue(
        self,
        predicate: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 15.0,
        interval: float = 0.1,
        what: str = "queue condition",
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        q = self.queue()
        while not predicate(q):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: {what} not reached within {timeout}s; queue={q!r}\n"
                    f"--- {self.log_file} ---\n{self.log_tail()}"
                )
            time.sleep(interval)
            q = self.queue()
        return q

    def wait_queue_empty(self, timeout: float = 15.0) -> None:
        self.wait_queue(lambda q: not q, timeout, what="empty queue")

    def wait_deferred(self, needle: str, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Wait until a queued recipient has a delay_reason containing ``needle``."""

        def has(q: list[dict[str, Any]]) -> bool:
            return any(
                needle in r.get("delay_reason", "") for m in q for r in m.get("recipients", [])
            )

        return self.wait_queue(has, timeout, what=f"deferral containing {needle!r}")

    # -- logs ------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_log(self, needle: str, timeout: float = 15.0, count: int = 1) -> str:
        """Wait until ``needle`` occurs at least ``count`` times in the maillog."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            if text.count(needle) >= count:
                return text
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: {needle!r} not logged {count}x within {timeout}s\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)

    # -- client helper ---------------------------------------------------------------
    def send(self, msg: EmailMessage | bytes, sender: str, recipients: Iterable[str]) -> str:
        """Submit a message over SMTP to this instance; returns the server's reply text."""
        return send_message(self.host, self.port, msg, sender, recipients)


def make_message(
    sender: str = "alice@author.example",
    to: str = "bob@remote.example",
    subject: str = "drossel e2e",
    body: str = "hello\n",
    extra_headers: Iterable[tuple[str, str]] = (),
) -> EmailMessage:
    msg = EmailMessage()
    for name, value in extra_headers:
        msg[name] = value
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="author.example")
    msg.set_content(body)
    return msg


def send_message(
    host: str,
    port: int,
    msg: EmailMessage | bytes,
    sender: str,
    recipients: Iterable[str],
    timeout: float = 15.0,
) -> str:
    """Send over SMTP; raises smtplib.SMTPException (e.g. SMTPDataError) on rejection."""
    rcpts = list(recipients)
    with smtplib.SMTP(host, port, local_hostname="client.drossel.test", timeout=timeout) as s:
        s.ehlo()
        if isinstance(msg, bytes):
            s.mail(sender)
            for r in rcpts:
                code, resp = s.rcpt(r)
                if code >= 400:
                    raise smtplib.SMTPRecipientsRefused({r: (code, resp)})
            code, resp = s.data(msg)
            if code >= 400:
                raise smtplib.SMTPDataError(code, resp)
            return resp.decode(errors="replace")
        s.send_message(msg, from_addr=sender, to_addrs=rcpts)
        return "ok"
