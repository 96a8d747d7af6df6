"""A real DNS server (dnsmasq) on loopback serving a zone written by the test.

    with DnsServer(hosts={"good.drossel.test": "127.0.0.2"},
                   ptrs={"127.0.0.3": "liar.drossel.test"}) as dns:
        ... resolver at dns.host:dns.port ...

``hosts`` become A (and matching PTR) records, ``ptrs`` PTR records only.  Every other name in
``drossel.test`` and every other reverse name in 127.0.0.0/8 is NXDOMAIN; nothing is forwarded
anywhere (``no-resolv``).  All waits are bounded.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["DnsServer", "dns_unavailable_reason", "free_udp_tcp_port", "silent_udp_port"]


def _dnsmasq() -> str | None:
    return shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin")


def dns_unavailable_reason() -> str | None:
    if _dnsmasq() is None:
        return "dnsmasq is not installed (apt-get install dnsmasq-base; scripts/setup.sh does)"
    return None


def free_udp_tcp_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` (DNS uses both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free UDP+TCP port found")


@contextlib.contextmanager
def silent_udp_port(host: str = "127.0.0.1"):  # type: ignore[no-untyped-def]
    """A bound UDP socket that never answers: a DNS server that times out."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((host, 0))
        yield int(udp.getsockname()[1])


def _reverse_name(addr: str) -> str:
    return ipaddress.ip_address(addr).reverse_pointer


class DnsServer:
    def __init__(
        self,
        hosts: Mapping[str, str] | None = None,
        ptrs: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.hosts = dict(hosts or {})
        self.ptrs = dict(ptrs or {})
        self.host = host
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        lines = [
            f"port={self.port}",
            f"listen-address={self.host}",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "no-poll",
            "bogus-priv",
            "local=/drossel.test/",
            "local=/127.in-addr.arpa/",
            "cache-size=0",
            "log-queries",
        ]
        lines += [f"host-record={name},{addr}" for name, addr in self.hosts.items()]
        lines += [f"ptr-record={_reverse_name(addr)},{name}" for addr, name in self.ptrs.items()]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> DnsServer:
        dnsmasq = _dnsmasq()
        if dnsmasq is None:
            raise FileNotFoundError("dnsmasq")
        self._dir = Path(tempfile.mkdtemp(prefix="drossel-dns-"))
        self.port = free_udp_tcp_port(self.host)
        conf = self._dir / "dnsmasq.conf"
        conf.write_text(self.config())
        self.log_file = self._dir / "dnsmasq.log"
        with self.log_file.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    dnsmasq,
                    "--keep-in-foreground",
                    f"--conf-file={conf}",
                    "--pid-file=",
                    "--log-facility=-",
                    "--user=root",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {self.log_file.read_text()}")
            with contextlib.suppress(OSError):
                socket.create_connection((self.host, self.port), timeout=1).close()
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dnsmasq not listening after {timeout}s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
