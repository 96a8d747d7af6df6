"""Mail from an out-of-date Exchange server, and moments in its schedule, for e2e tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from drossel.core.schedule import hour_offset
from harness.postfix import AUTHOR, make_message

SERVER = "ex01.contoso.example"
OLD_BUILD = "15.1.2507.6"  # Exchange 2016 CU23 without security updates: unsupported
T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
EXCHANGE_RECEIVED = (
    "from MBX01.contoso.local (10.0.0.5) by {server} (10.0.0.6) with Microsoft SMTP "
    "Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id {build}; "
    "Tue, 1 Sep 2026 08:00:00 +0000"
)
THROTTLE_TEXT = (
    "4.7.230 Connecting Exchange server version is out-of-date; connection to this mail "
    "service throttled for 5 mins/hr. For more information see https://aka.ms/BlockUnsafeExchange"
)
BLOCK_TEXT = (
    "5.7.230 Connecting Exchange server version is out-of-date; connection to this mail "
    "service blocked for 60 mins/hr. For more information see https://aka.ms/BlockUnsafeExchange"
)


def exchange_message(subject: str, server: str = SERVER, build: str = OLD_BUILD):  # type: ignore[no-untyped-def]
    return make_message(
        sender=AUTHOR,
        subject=subject,
        extra_headers=[("Received", EXCHANGE_RECEIVED.format(server=server, build=build))],
    )


def window_start(days: int, server: str = SERVER, tenant: str = "default") -> datetime:
    """A moment ``days`` after T0, 10 seconds into the server's window of the hour."""
    day = T0 + timedelta(days=days)
    return day.replace(minute=hour_offset(f"{tenant}/{server}"), second=10)


def outside_windows(days: int, server: str = SERVER, tenant: str = "default") -> datetime:
    """A moment after the block and throttle windows of a stage with at most 35 minutes."""
    start = window_start(days, server, tenant)
    return start + timedelta(minutes=40)
