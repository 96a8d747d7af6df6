"""Raw milter byte fixtures: a Postfix 3 (protocol 6) exchange, packet by packet.

Written out as literal bytes (length prefix, command byte, payload) rather than
built with drossel's encoder, so tests compare against an independent source.
"""

from typing import Final

# Postfix 3.x, milter_protocol=6: all actions (0x1ff), all steps (0x1fffff)
OPTNEG: Final = b"\x00\x00\x00\rO\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff"
# connect-stage macros, names with braces as Postfix sends them
MACRO_CONNECT: Final = (
    b"\x00\x00\x00nDCj\x00mx.example.net\x00{daemon_name}\x00mx.example.net\x00{client_addr}"
    b"\x00203.0.113.25\x00{client_name}\x00mail.contoso.example\x00"
)
# family '4', port 49319, address
CONNECT: Final = b"\x00\x00\x00&Cmail.contoso.example\x004\xc0\xa7203.0.113.25\x00"
# helo-stage TLS macros
MACRO_HELO: Final = (
    b"\x00\x00\x00?DH{tls_version}\x00TLSv1.2\x00{cert_subject}\x00CN=mail.contoso.example\x00"
)
HELO: Final = b"\x00\x00\x00\x16Hmail.contoso.example\x00"
MACRO_MAIL: Final = b"\x00\x00\x00'DMi\x004VwKq1Zx3Tz9\x00{tls_version}\x00TLSv1.2\x00"
# sender plus ESMTP parameters
MAIL: Final = b"\x00\x00\x002M<alerts@contoso.example>\x00SIZE=4321\x00BODY=8BITMIME\x00"
MACRO_RCPT: Final = b"\x00\x00\x00\x11DRi\x004VwKq1Zx3Tz9\x00"
RCPT: Final = b"\x00\x00\x00\x13R<ops@example.net>\x00"
# Postfix repeats the EOH macro list before every header
MACRO_HEADER: Final = b"\x00\x00\x00\x11DLi\x004VwKq1Zx3Tz9\x00"
# folded Exchange Received:, continuation lines joined by LF
HDR_RECEIVED_1: Final = (
    b"\x00\x00\x00\xdfLReceived\x00from EX01.contoso.example (10.0.0.5) by\n EX02.contoso.exam"
    b"ple (10.0.0.6) with Microsoft SMTP Server\n (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_A"
    b"ES_256_GCM_SHA384) id\n 15.1.2507.39; Tue, 4 Jun 2024 10:00:00 +0200\x00"
)
# Exchange frontend hop, tab-folded
HDR_RECEIVED_2: Final = (
    b"\x00\x00\x00\xbaLReceived\x00from EX02.contoso.example (10.0.0.6) by\n\tmail.contoso.exa"
    b"mple (203.0.113.25) with Microsoft SMTP Server id\n\t15.1.2507.39 via Frontend Transport"
    b"; Tue, 4 Jun 2024 10:00:01 +0200\x00"
)
HDR_FROM: Final = b"\x00\x00\x00&LFrom\x00Alerts <alerts@contoso.example>\x00"
# a literal % in a header
HDR_SUBJECT: Final = b'\x00\x00\x00"LSubject\x00Disk C: 95% full on EX01\x00'
# Exchange sends empty-valued headers
HDR_EMPTY: Final = b"\x00\x00\x00\x12LX-MS-Has-Attach\x00\x00"
MACRO_EOH: Final = b"\x00\x00\x00\x11DNi\x004VwKq1Zx3Tz9\x00"
EOH: Final = b"\x00\x00\x00\x01N"
MACRO_EOB: Final = b"\x00\x00\x00\x11DEi\x004VwKq1Zx3Tz9\x00"
BODYEOB: Final = b"\x00\x00\x00\x01E"
ABORT: Final = b"\x00\x00\x00\x01A"
QUIT: Final = b"\x00\x00\x00\x01Q"

# v6, ADDHDRS|SETSYMLIST, NOCONNECT|NOBODY|NODATA|NOUNKNOWN + NR_{CONN,HELO,MAIL,DATA,UNKN,
# HDR,BODY}; macro lists (stage 0..6): an undefined name at CONNECT, HELO, RCPT and end of
# headers (else Postfix sends its own lists), client and TLS evidence at MAIL, the queue id at
# DATA and at end of message
R_OPTNEG: Final = (
    b"\x00\x00\x00\xceO\x00\x00\x00\x06\x00\x00\x01\x01\x00\x0bs\x91"
    b"\x00\x00\x00\x00{drossel_unused}\x00"
    b"\x00\x00\x00\x01{drossel_unused}\x00"
    b"\x00\x00\x00\x02{client_addr} {client_name} {client_ptr} {tls_version} {cert_subject}"
    b" {cert_issuer} {verify}\x00"
    b"\x00\x00\x00\x03{drossel_unused}\x00"
    b"\x00\x00\x00\x04i\x00"
    b"\x00\x00\x00\x05i\x00"
    b"\x00\x00\x00\x06{drossel_unused}\x00"
)
# the same with NR_EOH (answer_at_end_of_message): steps 0x000f7391
R_OPTNEG_NR_EOH: Final = R_OPTNEG[:14] + b"\x0f" + R_OPTNEG[15:]
R_CONTINUE: Final = b"\x00\x00\x00\x01c"
R_ACCEPT: Final = b"\x00\x00\x00\x01a"
R_TEMPFAIL: Final = b"\x00\x00\x00\x01t"
R_REJECT: Final = b"\x00\x00\x00\x01r"
R_ADDHEADER_GRADE: Final = b"\x00\x00\x00(hX-Drossel-Grade\x00B (Exchange 2016 CU23)\x00"
# policy text 'Exchange 15.1.2507 is 42% out\r\nof date' sanitised
R_REPLY_450: Final = b"\x00\x00\x004y450 4.7.230 Exchange 15.1.2507 is 42%% out of date\x00"

# --- client evidence (SPEC §3) at MAIL, as Postfix 3.7 sends the macros drossel asks for ---
# verified: forward-confirmed name, and a trusted client certificate (Postfix: bare CN)
MACRO_MAIL_VERIFIED: Final = (
    b"\x00\x00\x00\xccDMi\x004VwKq1Zx3Tz9\x00{client_addr}\x00203.0.113.25\x00"
    b"{client_name}\x00mail.contoso.example\x00{client_ptr}\x00mail.contoso.example\x00"
    b"{tls_version}\x00TLSv1.3\x00{cert_subject}\x00mail.contoso.example\x00"
    b"{cert_issuer}\x00Contoso Issuing CA\x00"
)
# PTR exists but does not resolve back: {client_name} "unknown"; IPv6 in RFC 5321 form
MACRO_MAIL_UNCONFIRMED: Final = (
    b"\x00\x00\x00iDMi\x004VwKq1Zx3Tz9\x00{client_addr}\x00IPv6:2001:db8::25\x00"
    b"{client_name}\x00unknown\x00{client_ptr}\x00mail.contoso.example\x00"
)
# Sendmail: DN subject of a certificate that did not verify, address-literal client name
MACRO_MAIL_SENDMAIL_FAIL: Final = (
    b"\x00\x00\x00\x99DMi\x00q1\x00{client_addr}\x00203.0.113.25\x00{client_name}\x00"
    b"[203.0.113.25]\x00{client_ptr}\x00unknown\x00{verify}\x00FAIL\x00{cert_subject}\x00"
    b"/C=DE/O=Contoso/CN=mail.contoso.example\x00"
)
# Sendmail: the same DN, verified
MACRO_MAIL_SENDMAIL_OK: Final = (
    b"\x00\x00\x00JDMi\x00q1\x00{verify}\x00OK\x00{cert_subject}\x00"
    b"/C=DE/O=Contoso/CN=Mail.Contoso.Example\x00"
)

# --- forged verdict headers (issue 10): a sender writes drossel's header itself -----------
HDR_FORGED_DROSSEL: Final = (
    b"\x00\x00\x00TLX-Drossel\x00server=ex01.contoso.example; build=15.2.2562.53;"
    b" status=current; stage=0\x00"
)
HDR_FORGED_DROSSEL_LOWER: Final = b"\x00\x00\x00\x12Lx-drossel\x00forged\x00"
# SMFIR_CHGHEADER, index 2 then 1, empty value = delete
R_DELETE_DROSSEL_2: Final = b"\x00\x00\x00\x10m\x00\x00\x00\x02X-Drossel\x00\x00"
R_DELETE_DROSSEL_1: Final = b"\x00\x00\x00\x10m\x00\x00\x00\x01X-Drossel\x00\x00"
R_ADDHEADER_DROSSEL: Final = b"\x00\x00\x00 hX-Drossel\x00server=ex01; stage=1\x00"
