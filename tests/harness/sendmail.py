"""Private Sendmail instances on loopback for end-to-end tests.

Debian's ``sendmail-bin`` conflicts with Postfix (both are the machine's mail transport agent),
so ``scripts/setup.sh`` does not install it: it downloads the packages and unpacks them into a
private directory (``$DROSSEL_SENDMAIL_ROOT``, default ``/opt/drossel-sendmail``).  Each instance
gets its own ``.cf`` built with m4 from an ``.mc`` that has ``INPUT_MAIL_FILTER``, its own port,
queue, pid file and traffic log (``-X``: every SMTP line in and out; Sendmail's own log goes to
syslog, which test machines may not have), and relays everything to a sink.

Sendmail insists on a fully qualified host name for itself and sleeps a minute when it has
none, so it runs in a private UTS namespace (``unshare --uts``) named ``mx.sendmail.test``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DEFAULT_ROOT = Path("/opt/drossel-sendmail")
HOSTNAME = "mx.sendmail.test"


def sendmail_root() -> Path:
    return Path(os.environ.get("DROSSEL_SENDMAIL_ROOT") or DEFAULT_ROOT)


def binary(root: Path | None = None) -> Path:
    return (root or sendmail_root()) / "usr/libexec/sendmail/sendmail"


def cf_dir(root: Path | None = None) -> Path:
    return (root or sendmail_root()) / "usr/share/sendmail/cf"


def unavailable_reason() -> str | None:
    """Why a private Sendmail cannot run here (None when it can)."""
    if not binary().exists() or not (cf_dir() / "m4/cf.m4").exists():
        return f"no private Sendmail in {sendmail_root()} (run scripts/setup.sh as root)"
    for tool in ("m4", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if os.geteuid() != 0:
        return "a private Sendmail daemon needs root (unshare --uts, privileged port checks)"
    probe = subprocess.run(["unshare", "--uts", "true"], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        return f"unshare --uts does not work here: {probe.stderr.strip()}"
    return None


def mc_text(base: Path, port: int, relay_port: int, milter: str | None, flags: str) -> str:
    """The instance's ``.mc``: one daemon on 127.0.0.1:port, everything relayed to the sink,
    no DNS, no aliases, and (when ``milter`` is ``inet:PORT@HOST``) drossel as input filter."""
    equates = f"S={milter}, " + (f"F={flags}, " if flags else "") + "T=C:5s;S:10s;R:10s;E:30s"
    filter_line = f"INPUT_MAIL_FILTER(`drossel', `{equates}')dnl\n" if milter else ""
    return f"""divert(-1)
divert(0)dnl
OSTYPE(`linux')dnl
define(`confDOMAIN_NAME', `{HOSTNAME}')dnl
define(`confCW_FILE', `-o {base}/local-host-names')dnl
define(`confHELP_FILE', `{base}/helpfile')dnl
define(`confPID_FILE', `{base}/sendmail.pid')dnl
define(`QUEUE_DIR', `{base}/queue')dnl
define(`STATUS_FILE', `{base}/statistics')dnl
define(`confHOST_STATUS_DIRECTORY', `')dnl
define(`confDONT_PROBE_INTERFACES', `true')dnl
define(`confSERVICE_SWITCH_FILE', `{base}/service.switch')dnl
define(`confHOSTS_FILE', `{base}/hosts')dnl
define(`confBIND_OPTS', `-DNSRCH -DEFNAMES')dnl
define(`confTO_IDENT', `0')dnl
define(`confDELIVERY_MODE', `background')dnl
define(`confMILTER_LOG_LEVEL', `9')dnl
undefine(`ALIAS_FILE')dnl
FEATURE(`nocanonify')dnl
FEATURE(`accept_unresolvable_domains')dnl
FEATURE(`accept_unqualified_senders')dnl
define(`SMART_HOST', `esmtp:[127.0.0.1]')dnl
define(`ESMTP_MAILER_ARGS', `TCP $h {relay_port}')dnl
DAEMON_OPTIONS(`Port={port}, Addr=127.0.0.1, Name=MTA')dnl
{filter_line}MAILER(`local')dnl
MAILER(`smtp')dnl
"""


class SendmailInstance:
    """One Sendmail daemon (``-bD``, foreground) with its own files under ``base``."""

    def __init__(
        self,
        base: Path,
        port: int,
        relay_port: int,
        milter: str | None = None,
        flags: str = "T",
    ) -> None:
        self.base, self.port, self.host = base, port, "127.0.0.1"
        base.mkdir(parents=True, exist_ok=True)
        (base / "queue").mkdir(mode=0o700, exist_ok=True)
        for name in ("local-host-names", "helpfile", "statistics"):
            (base / name).touch()
        (base / "service.switch").write_text("hosts files\n")
        (base / "hosts").write_text(f"127.0.0.1 localhost {HOSTNAME}\n")
        (base / "sendmail.mc").write_text(mc_text(base, port, relay_port, milter, flags))
        self.cf = base / "sendmail.cf"
        self.traffic_log = base / "traffic.log"
        self.output = base / "sendmail.out"
        self.process: subprocess.Popen[bytes] | None = None

    def build_cf(self) -> None:
        cf = cf_dir()
        with self.cf.open("wb") as out:
            subprocess.run(
                ["m4", f"-D_CF_DIR_={cf}/", str(cf / "m4/cf.m4"), str(self.base / "sendmail.mc")],
                stdout=out,
                check=True,
                timeout=30,
            )

    def start(self, timeout: float = 30.0) -> SendmailInstance:
        self.build_cf()
        command = f"hostname {HOSTNAME} && exec {binary()} -bD -C {self.cf} -X {self.traffic_log}"
        with self.output.open("ab") as out:
            self.process = subprocess.Popen(
                ["unshare", "--uts", "sh", "-c", command],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sendmail exited: {self.output.read_text(errors='replace')}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(512).startswith(b"220"):
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"sendmail did not answer on {self.port}: {self.log_tail()}")

    def stop(self) -> None:
        """Stop the daemon and its per-connection children (its own process group)."""
        if self.process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        # children of the group may outlive the daemon for a moment
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None

    def queued(self) -> list[Path]:
        """The queue's control files (one per queued message)."""
        return sorted((self.base / "queue").glob("qf*"))

    def wait_queue_empty(self, timeout: float = 15.0) -> None:
        """Wait until delivered mail has left the queue (refused mail never enters it)."""
        deadline = time.monotonic() + timeout
        while self.queued():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self!r}: queue not empty: {self.queued()}")
            time.sleep(0.1)

    def log_text(self) -> str:
        try:
            return self.traffic_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        out = self.output.read_text(errors="replace") if self.output.exists() else ""
        return "\n".join((out + self.log_text()).splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"SendmailInstance(port={self.port}, base={self.base})"
