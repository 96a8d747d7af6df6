"""Client evidence macros from a real Postfix reach the milter (SPEC §3, issue 10).

A real Postfix (reverse lookups on, TLS with client-certificate requests) talks to drossel's
milter server, run in-process with a policy that records what it was shown; the evidence is
then derived with the production :func:`drossel.milter.enforcement.client_info`.  Shows that
the macros drossel asks for in OPTNEG actually arrive, and that a certificate from an
untrusted CA yields TLS but no certificate name (Postfix only sends ``{cert_subject}`` for a
trusted one).
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Callable
from pathlib import Path

from drossel.milter import MessageContext, MilterVerdict, start_milter_server
from drossel.milter.enforcement import client_info
from harness.postfix import AUTHOR, RECIPIENT, PostfixInstance, find_free_port, make_message
from harness.sink import SmtpSink
from harness.tls import CertPair, make_ca, make_cert

CLIENT_NAME = "mail.contoso.example"


class Recorder:
    """Accepts everything, keeps each end-of-headers context."""

    def __init__(self) -> None:
        self.seen: list[MessageContext] = []

    async def on_recipient(self, ctx: MessageContext) -> MilterVerdict:
        return MilterVerdict("continue")

    async def on_end_of_headers(self, ctx: MessageContext) -> MilterVerdict:
        self.seen.append(ctx)
        return MilterVerdict("accept")


def _send(postfix: PostfixInstance, subject: str, client_cert: CertPair | None) -> None:
    with smtplib.SMTP(postfix.host, postfix.port, local_hostname="helo.contoso.example",
                      timeout=20) as smtp:  # fmt: skip
        if client_cert is not None:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # we test the server's view of *our* cert
            context.load_cert_chain(client_cert.cert, client_cert.key)
            smtp.starttls(context=context)
        smtp.send_message(make_message(subject=subject), AUTHOR, [RECIPIENT])


async def test_postfix_sends_the_evidence_macros(
    tmp_path: Path,
    receiving_postfix: Callable[..., PostfixInstance],
    sink: SmtpSink,
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    certs.chmod(0o755)
    ca = make_ca(certs)
    server = make_cert(certs, ca, "recv.drossel.test", "server")
    trusted = make_cert(certs, ca, CLIENT_NAME, "client")
    rogue_dir = certs / "rogue"
    rogue_dir.mkdir()
    rogue = make_cert(rogue_dir, make_ca(rogue_dir, "rogue CA"), CLIENT_NAME, "client")

    recorder = Recorder()
    port = find_free_port()
    milter = await start_milter_server(recorder, f"inet:127.0.0.1:{port}")
    try:
        postfix = await asyncio.to_thread(
            receiving_postfix,
            port,
            tls=True,
            main={
                "smtpd_peername_lookup": "yes",  # 127.0.0.1 <-> localhost via /etc/hosts
                "smtpd_tls_security_level": "may",
                "smtpd_tls_cert_file": str(server.cert),
                "smtpd_tls_key_file": str(server.key),
                "smtpd_tls_ask_ccert": "yes",
                "smtpd_tls_CAfile": str(ca.cert),
            },
        )
        await asyncio.to_thread(_send, postfix, "plain", None)
        await asyncio.to_thread(_send, postfix, "trusted", trusted)
        await asyncio.to_thread(_send, postfix, "untrusted", rogue)
    finally:
        milter.close()
        await milter.wait_closed()
    assert await asyncio.to_thread(sink.wait_for, 3, 20)

    plain, verified, unverified = recorder.seen
    for ctx in (plain, verified, unverified):
        info = client_info(ctx)
        assert info.addr == "127.0.0.1"
        assert info.name == "localhost"  # forward-confirmed through /etc/hosts
        assert info.ptr == "localhost"
        assert info.helo == "helo.contoso.example"
        assert ctx.macros["client_name"] == "localhost"
        assert ctx.macros["client_ptr"] == "localhost"

    assert "tls_version" not in plain.macros
    assert client_info(plain).tls_name is None

    assert verified.macros["tls_version"].startswith("TLSv1")
    assert verified.macros["cert_subject"] == CLIENT_NAME  # Postfix: the CN, not a DN
    assert verified.macros["cert_issuer"] == "drossel test CA"
    assert client_info(verified).tls_name == CLIENT_NAME

    assert unverified.macros["tls_version"].startswith("TLSv1")
    assert "cert_subject" not in unverified.macros  # not trusted: Postfix sends nothing
    assert client_info(unverified).tls_name is None
