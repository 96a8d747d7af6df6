"""A real ``drossel milter`` process for end-to-end tests (Postfix and Sendmail alike)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path


class DrosselMilter:
    """A ``drossel milter`` process on a loopback port, clock starting at ``now``."""

    def __init__(self, db: Path, port: int, log: Path) -> None:
        self.db, self.port, self.log = db, port, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, now: datetime) -> DrosselMilter:
        # The MTA's client here is localhost, not the Exchange server in the headers: the
        # evidence is "unverified" (SPEC §3), which these schedule tests enforce on purpose.
        config = self.db.parent / "drossel.toml"
        config.write_text("[policy]\nenforce_unverified = true\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DROSSEL_")}
        env["DROSSEL_NOW"] = now.isoformat()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "drossel.cli.main",
                    "milter",
                    "--listen",
                    f"inet:127.0.0.1:{self.port}",
                    "--db",
                    f"sqlite:///{self.db}",
                    "--config",
                    str(config),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("drossel milter did not start:\n" + self.log.read_text())

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            assert self.process.wait(timeout=15) == 0, self.log.read_text()
        finally:
            if self.process.poll() is None:
                self.process.kill()

    def restart(self, now: datetime) -> None:
        self.stop()
        self.start(now)
