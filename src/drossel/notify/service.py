"""Derive due notification events from the report, claim each once, send it by SMTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formatdate, make_msgid
from typing import Any

from drossel.app.errors import AppError
from drossel.app.report import day_of, pause_budget, server_report, stage_rates
from drossel.config import Clock, Config, ConfigError, NotifyConfig
from drossel.core.catalog import Catalog
from drossel.core.schedule import DAY
from drossel.metrics import NOTIFICATIONS
from drossel.storage import notifications as queries
from drossel.storage.store import Store

log = logging.getLogger("drossel.notify")

MAX_ATTEMPTS = 5
STALE_SECONDS = 600.0
RETRY_SECONDS = 60.0
REMEDIATION_WINDOW = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Event:
    key: str
    tenant: str
    server: str
    event: str  # first_detected, throttle_notice, stage_change, block_start, remediated
    subject: str
    body: str


@dataclass(frozen=True, slots=True)
class Sent:
    event_key: str
    tenant: str
    server: str | None
    event: str
    recipients: tuple[str, ...]


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return text, 25
    return host.strip("[]") or "127.0.0.1", int(port)


def send_mail(
    notify: NotifyConfig,
    recipients: list[str],
    subject: str,
    body: str,
    now: datetime | None = None,
) -> None:
    """Send one notification through the configured relay.  ``Date:`` is ``now`` from the
    configured clock (so a demo or a test clock shows in the mail as it does in the report);
    TLS and SMTP AUTH as ``[notify]`` says."""
    message = EmailMessage()
    message["From"] = notify.sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = (
        format_datetime(now.astimezone(UTC), usegmt=True) if now else formatdate(usegmt=True)
    )
    message["Message-ID"] = make_msgid(domain=notify.sender.rpartition("@")[2] or "localhost")
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body)
    host, port = _listen(notify.relay)
    with _connect(notify, host, port) as smtp:
        if notify.username:
            smtp.login(notify.username, notify.secret() or "")
        smtp.send_message(message, from_addr=notify.sender, to_addrs=recipients)


def _tls_context(notify: NotifyConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=notify.tls_ca)
    if not notify.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _connect(notify: NotifyConfig, host: str, port: int) -> smtplib.SMTP:
    """An SMTP session to the relay, TLS-protected when configured (STARTTLS is required, not
    opportunistic: a relay that does not offer it is an error, not a fallback to clear text)."""
    if notify.tls == "tls":
        return smtplib.SMTP_SSL(host, port, timeout=30, context=_tls_context(notify))
    smtp = smtplib.SMTP(host, port, timeout=30)
    if notify.tls == "starttls":
        try:
            smtp.starttls(context=_tls_context(notify))
        except BaseException:
            smtp.close()
            raise
    return smtp


def _clean(text: Any) -> str:
    """Header-derived text is printed in mails: no control characters, bounded."""
    return "".join(ch if ch.isprintable() else " " for ch in str(text))[:300]


def _compose(
    kind: str, row: dict[str, Any], budget: dict[str, int], config: Config
) -> tuple[str, str]:
    server = _clean(row["server_fqdn"])
    service = config.policy.replies.service
    install = (
        "; ".join(_clean(r) for r in row["recommended_builds"]) or "a supported, current build"
    )
    throttle, block = row["throttle_minutes"], row["block_minutes"]
    if kind == "first_detected":
        subject = f"{server}: out-of-date Exchange server detected"
        what = (
            f"We detected {server} sending mail to {service} with an out-of-date Exchange build. "
            f"For now this is only reported. If it is not updated, its mail will be throttled "
            f"(temporarily refused, 450) from {day_of(row['throttle_start'])} and blocked "
            f"(refused, 550; senders get bounces) from {day_of(row['block_start'])}; all of it "
            f"from {day_of(row['full_block_start'])}."
        )
    elif kind == "throttle_notice":
        subject = f"{server}: mail will be throttled from {day_of(row['throttle_start'])}"
        what = (
            f"From {day_of(row['throttle_start'])}, mail from {server} will be refused temporarily "
            f"(450 4.7.230) for {row['next_stage_throttle_minutes'] or 0} minutes of every hour. "
            "Your server retries, so mail is delayed, not lost; later stages block mail (550)."
        )
    elif kind == "block_start":
        subject = f"{server}: mail is now being blocked"
        what = (
            f"Mail from {server} is now refused permanently (550 5.7.230) for {block} minutes "
            f"and temporarily (450) for {throttle} minutes of every hour (stage {row['stage']} "
            "of 8). Senders receive bounces for blocked mail and must resend it."
        )
    elif kind == "stage_change":
        subject = f"{server}: now stage {row['stage']} of 8 ({stage_rates(throttle, block)})"
        what = f"Mail from {server} is now handled as follows: {stage_rates(throttle, block)}."
    else:  # remediated
        subject = f"{server}: up to date, no longer throttled or blocked"
        what = (
            f"{server} now sends with build {_clean(row['build'])}. Throttling and blocking of "
            "its mail have stopped. Thank you."
        )
    lines = [
        "Hello,",
        "",
        f"this is an automatic message from {service} about mail your organisation sends us.",
        "",
        what,
        "",
        f"Server:    {server} (tenant {_clean(row['tenant'])})",
        f"Software:  {_clean(row['product'])} "
        f"{_clean(row['update_name'] or 'unknown update')} ({_clean(row['build'])})",
        f"Status:    {row['status']}",
    ]
    for reason in row["reasons"]:
        lines.append(f"Why:       {_clean(reason)}")
    if kind != "remediated":
        lines += [
            "",
            f"What to install: {install}",
            "",
            "Schedule (assuming no pause):",
            f"  throttling from  {day_of(row['throttle_start'])}",
            f"  blocking from    {day_of(row['block_start'])}",
            f"  all mail refused {day_of(row['full_block_start'])}",
        ]
        if row["next_stage"]:
            rates = stage_rates(row["next_stage_throttle_minutes"], row["next_stage_block_minutes"])
            lines.append(
                f"  next: stage {row['next_stage']} "
                f"from {day_of(row['next_stage_start'])} ({rates})"
            )
        lines += [
            "",
            f"Pause budget: {budget['left_days']} of {budget['budget_days']} days left in "
            f"{budget['year']}. A pause stops throttling and blocking while you update.",
        ]
    lines += ["", f"Report and pause: {config.notify.report_url}", "", "-- ", "drossel"]
    return subject, "\n".join(lines) + "\n"


def due_events(store: Store, config: Config, catalog: Catalog, now: datetime) -> list[Event]:
    """The events due at ``now`` for every active server (claimed or not)."""
    policy = config.policy
    cutoff = now - timedelta(days=policy.inactive_after_days)
    budgets: dict[str, dict[str, int]] = {}
    pauses_by_tenant: dict[str, list[Any]] = {}
    events: list[Event] = []
    overrides = store.list_overrides(now)
    for stored in store.list_servers():
        record = stored.record
        if record.last_seen < cutoff or record.clock_start is None:
            continue
        tenant = record.tenant
        if tenant not in pauses_by_tenant:
            pauses_by_tenant[tenant] = store.list_pauses(tenant)
            budgets[tenant] = pause_budget(store, policy, tenant, now).to_json()
        row = server_report(
            stored, store, policy, catalog, now, pauses_by_tenant[tenant], overrides
        )
        clock_key = record.clock_start.isoformat()
        base = f"{tenant}|{record.server}|{clock_key}"
        found: list[tuple[str, str]] = []
        if record.remediated_at is not None:
            if now - record.remediated_at <= REMEDIATION_WINDOW:
                found.append(
                    ("remediated", f"remediated|{base}|{record.remediated_at.isoformat()}")
                )
        elif row["persistently_vulnerable"] and row["stage"]:
            # only what is applied is announced: nothing while report-only by rollout or
            # mode, unverified, paused or overridden (the row says 0 then, SPEC §7)
            stage = row["stage"]
            if stage == 1:
                found.append(("first_detected", f"first_detected|{base}"))
                start = row["throttle_start"]
                if start:
                    begins = datetime.fromisoformat(start)
                    notice = DAY * policy.notice_days_before_throttle
                    if begins - notice <= now < begins:
                        found.append(("throttle_notice", f"throttle_notice|{base}"))
            else:
                previous = policy.stages[stage - 2]
                current = policy.stages[stage - 1]
                kind = (
                    "block_start"
                    if current.block_minutes > 0 and previous.block_minutes == 0
                    else "stage_change"
                )
                found.append((kind, f"stage|{base}|{stage}"))
        for kind, key in found:
            subject, body = _compose(kind, row, budgets[tenant], config)
            events.append(Event(key, tenant, record.server, kind, subject, body))
    return events


def _deliver(
    store: Store,
    config: Config,
    row_id: int,
    attempts: int,
    tenant: str,
    event: str,
    stored_body: str,
    now: datetime,
) -> tuple[str, ...] | None:
    """Send one claimed notification; record the outcome.  The recipients, or ``None``."""
    try:
        contacts = list(store.get_tenant(tenant).contacts)
    except AppError:
        return None
    if not contacts:
        return None
    if not queries.begin_attempt(store, row_id, attempts, now):
        return None  # another node took it
    subject, _, body = stored_body.partition("\n\n")
    subject = subject.removeprefix("Subject: ")
    try:
        send_mail(config.notify, contacts, subject, body, now)
    except (OSError, smtplib.SMTPException, ssl.SSLError, ConfigError) as exc:
        queries.mark_failed(store, row_id, f"{type(exc).__name__}: {exc}", now)
        NOTIFICATIONS.labels(event=event, outcome="failed").inc()
        log.warning("notification %s to %s failed: %s", event, tenant, exc)
        return None
    queries.mark_sent(store, row_id, now)
    NOTIFICATIONS.labels(event=event, outcome="sent").inc()
    log.info("notified %s of %s", ",".join(contacts), event)
    return tuple(contacts)


def scan_and_notify(store: Store, config: Config, catalog: Catalog, now: datetime) -> list[Sent]:
    """Claim and send every due event once; retry earlier failed sends.  What was sent."""
    sent: list[Sent] = []
    contacts = {t.name: t.contacts for t in store.list_tenants()}
    for event in due_events(store, config, catalog, now):
        if not contacts.get(event.tenant):
            continue  # nobody to tell yet; the event stays unclaimed until a contact exists
        stored_body = f"Subject: {event.subject}\n\n{event.body}"
        if not store.claim_notification(
            event.key, event.tenant, event.server, event.event, stored_body, now
        ):
            continue
        row = queries.get_notification(store, event.key)
        if row is None:
            continue
        # Our claim made the row with no attempt yet: send only as that first attempt.  Its
        # current ``attempts`` may already be another sender's (which took the row through
        # the retry path meanwhile), and using it would let both of us send.
        recipients = _deliver(store, config, row.id, 0, event.tenant, event.event, stored_body, now)
        if recipients:
            sent.append(Sent(event.key, event.tenant, event.server, event.event, recipients))
    for row in queries.retryable_notifications(
        store, now, MAX_ATTEMPTS, STALE_SECONDS, RETRY_SECONDS
    ):
        if any(s.event_key == row.event_key for s in sent):
            continue
        recipients = _deliver(
            store, config, row.id, row.attempts, row.tenant, row.event, row.body, now
        )
        if recipients:
            sent.append(Sent(row.event_key, row.tenant, row.server, row.event, recipients))
    return sent


async def run_notifier(store: Store, config: Config, clock: Clock, stop: asyncio.Event) -> None:
    """Scan every ``notify.interval_seconds`` until ``stop`` is set (nothing if disabled)."""
    from drossel.app.catalog_source import load_catalog

    if not config.notify.enabled:
        return
    while not stop.is_set():
        try:
            catalog = await asyncio.to_thread(load_catalog, store)
            await asyncio.to_thread(scan_and_notify, store, config, catalog, clock())
        except Exception:
            log.exception("notification scan failed; will retry")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=config.notify.interval_seconds)
