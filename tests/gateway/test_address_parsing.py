"""The gateway's fast path for MAIL/RCPT addresses gives exactly what aiosmtpd's parser gives."""

from __future__ import annotations

import asyncio

from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from drossel.gateway.server import _PLAIN_ADDRESS, GatewaySMTP

ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
atom = st.text(alphabet=ATEXT, min_size=1, max_size=6)
label = st.text(alphabet="abz09-", min_size=1, max_size=6)
local = st.lists(atom, min_size=1, max_size=3).map(".".join)
domain = st.lists(label, min_size=1, max_size=3).map(".".join)
noise = st.text(alphabet=' \t<>@."()[]\\:;,aZ=é', max_size=8)
parameters = st.sampled_from(["", " SIZE=100", "  BODY=8BITMIME SMTPUTF8", "\tX", "Z", " (c) Y"])
address = st.one_of(
    st.builds(
        lambda lead, lp, d, rest: f"{lead}<{lp}@{d}>{rest}",
        st.sampled_from(["", " ", "\t"]),
        local,
        domain,
        parameters,
    ),
    st.builds(
        lambda a, b, c: a + b + c,
        noise,
        st.builds(lambda lp, d: f"<{lp}@{d}>", local, domain),
        noise,
    ),
    noise,
)


def _gateway_smtp() -> GatewaySMTP:
    class Handler:
        pass

    loop = asyncio.new_event_loop()
    try:
        return GatewaySMTP(Handler(), proxy_from=[], registry=set(), hostname="gw", loop=loop)  # type: ignore[arg-type]
    finally:
        loop.close()


SMTP_ = _gateway_smtp()


@settings(max_examples=600, deadline=None)
@given(address)
def test_fast_path_equals_aiosmtpd(arg: str) -> None:
    fast = SMTP_._getaddr(arg)
    try:
        reference = SMTP._getaddr(SMTP_, arg)
    except (IndexError, ValueError, AttributeError):
        reference = (None, None)
    assert fast == reference


def test_common_shapes_take_the_fast_path() -> None:
    for arg in ("<alice@contoso.example>", "<a.b+c@x-y.example> SIZE=1000 BODY=8BITMIME"):
        assert _PLAIN_ADDRESS.fullmatch(arg) is not None
    for arg in (
        "<>",
        '<"a b"@x.example>',
        "<a@[127.0.0.1]>",
        "<a@x.example> (c) Y",
        "<ä@x.example>",
    ):
        assert _PLAIN_ADDRESS.fullmatch(arg) is None


def test_a_comma_is_a_malformed_address_not_an_error() -> None:
    assert SMTP_._getaddr(",") == (None, None)


def test_the_local_part_limit_still_applies() -> None:
    limited = _gateway_smtp()
    limited.local_part_limit = 8  # aiosmtpd's class attribute, set per instance here
    for arg in ("<abcdefghi@x.example>", "<abcdefgh@x.example>"):
        assert limited._getaddr(arg) == SMTP._getaddr(limited, arg)
    assert limited._getaddr("<abcdefghi@x.example>") == (None, None)
