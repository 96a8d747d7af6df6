"""Throw-away X.509 material for TLS tests: a CA, and certificates it signs (openssl CLI).

Used to make a real Postfix verify a real client certificate (``smtpd_tls_ask_ccert``), so
tests can show what a *trusted* certificate looks like to a milter.  Keys are 2048-bit RSA
(fast enough to generate per test on a loaded machine).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CertPair", "make_ca", "make_cert"]


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str = "drossel test CA") -> CertPair:
    """A self-signed CA certificate and its key in ``directory``."""
    cert, key = directory / "ca.pem", directory / "ca.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/O=drossel tests/CN={name}", "-keyout", str(key), "-out", str(cert),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return CertPair(cert, key)


def make_cert(directory: Path, ca: CertPair, common_name: str, stem: str) -> CertPair:
    """A certificate for ``common_name`` (also its DNS SAN) signed by ``ca``."""
    key, csr, cert = (directory / f"{stem}{ext}" for ext in (".key", ".csr", ".pem"))
    ext = directory / f"{stem}.ext"
    ext.write_text(f"subjectAltName=DNS:{common_name}\nextendedKeyUsage=clientAuth,serverAuth\n")
    _openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj",
        f"/O=drossel tests/CN={common_name}", "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    for path in (key, cert):
        path.chmod(0o644)  # Postfix's daemons read them; test material only
    return CertPair(cert, key)
