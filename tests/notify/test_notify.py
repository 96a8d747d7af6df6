"""Notifications by mail through a local aiosmtpd sink: each event once, across restarts and
concurrent senders; failures retried; plain text saying what happens and what to install."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

from drossel_seed import ACTOR, server
from smtp_sink import free_port

from drossel.app.catalog_source import packaged_catalog
from drossel.config import NotifyConfig
from drossel.notify import due_events, run_notifier, scan_and_notify
from drossel.storage import notifications as queries
from drossel.storage.store import Store

CATALOG = packaged_catalog()


def events_of(sent):  # type: ignore[no-untyped-def]
    return sorted((s.server, s.event) for s in sent)


def test_sends_each_due_event_once(seeded, smtp):  # type: ignore[no-untyped-def]
    sink, _ = smtp
    sent = scan_and_notify(seeded.store, seeded.config, CATALOG, seeded.now)
    assert events_of(sent) == [
        ("ex01.contoso.example", "stage_change"),
        ("ex02.contoso.example", "first_detected"),
        ("mail.fabrikam.example", "block_start"),
    ]
    assert len(sink.messages) == 3
    by_subject = {m["Subject"]: (frm, rcpt, m) for frm, rcpt, m in sink.messages}
    ex01 = next(v for k, v in by_subject.items() if k.startswith("ex01"))
    frm, rcpt, msg = ex01
    assert frm == "drossel@mx.example"
    assert sorted(rcpt) == ["admin@contoso.example", "ops@contoso.example"]
    body = msg.get_payload(decode=True).decode()
    assert msg.get_content_type() == "text/plain"
    assert "Migrate to Exchange Server SE" in body
    assert "5 min/h delayed (450)" in body
    assert "Exchange 2016 reached end of extended support" in body
    assert "90 of 90 days left in 2026" in body
    assert "https://report.example/" in body
    fab = next(v for k, v in by_subject.items() if k.startswith("mail.fabrikam"))
    assert fab[1] == ["it@fabrikam.example"]
    assert "now being blocked" in fab[2]["Subject"]

    # again, and after a "restart" (a new Store on the same database): nothing more
    assert scan_and_notify(seeded.store, seeded.config, CATALOG, seeded.now) == []
    restarted = Store(seeded.store.url)
    try:
        assert (
            scan_and_notify(restarted, seeded.config, CATALOG, seeded.now + timedelta(hours=1))
            == []
        )
    finally:
        restarted.dispose()
    assert len(sink.messages) == 3
    rows = queries.list_notifications(seeded.store)
    assert len(rows) == 3
    assert all(r.sent_at == seeded.now and r.attempts == 1 and r.last_error is None for r in rows)


def test_notice_before_throttling_and_stage_changes(seeded, smtp):  # type: ignore[no-untyped-def]
    sink, _ = smtp
    scan_and_notify(seeded.store, seeded.config, CATALOG, seeded.now)
    # ex02 (detected 2 days ago) starts throttling on 2026-07-29; a week before is 07-22
    assert (
        scan_and_notify(seeded.store, seeded.config, CATALOG, seeded.now + timedelta(days=19)) != []
    )
    later = scan_and_notify(seeded.store, seeded.config, CATALOG, seeded.now + timedelta(days=21))
    assert ("ex02.contoso.example", "throttle_notice") in events_of(later)
    notice = next(
        m for _, _, m in sink.messages if "will be throttled from 2026-07-29" in m["Subject"]
    )
    assert "ex02.contoso.example" in notice["Subject"]
    assert (
        scan_and_notify(seeded.store, seeded.config, CATALOG, seeded.now + timedelta(days=22)) == []
    )


def test_each_stage_change_once(seeded, smtp):  # type: ignore[no-untyped-def]
    seen = []
    for day in range(0, 70):
        sent = scan_and_notify(
            seeded.store, seeded.config, CATALOG, seeded.now + timedelta(days=day)
        )
        seen += [
            (s.event, s.event_key.rsplit("|", 1)[-1])
            for s in sent
            if s.server == "ex01.contoso.example"
        ]
    stages = [stage for event, stage in seen if event in ("stage_change", "block_start")]
    assert stages == ["2", "3", "4", "5", "6", "7", "8"]
    assert ("block_start", "5") in seen


def test_remediation_mail(seeded, smtp):  # type: ignore[no-untyped-def]
    sink, _ = smtp
    now = seeded.now
    record = server("contoso", "ex01.contoso.example", 35, remediated_days_ago=0.5)
    seeded.store.save_server(record, "", now)
    sent = scan_and_notify(seeded.store, seeded.config, CATALOG, now)
    assert ("ex01.contoso.example", "remediated") in events_of(sent)
    assert any("no longer throttled" in m["Subject"] for _, _, m in sink.messages)


def test_override_and_no_contacts_suppress(seeded, smtp):  # type: ignore[no-untyped-def]
    store, now = seeded.store, seeded.now
    store.add_override("fabrikam", None, "known false positive", None, ACTOR, now)
    store.add_tenant("lonely", [], ACTOR, now)
    store.save_server(server("lonely", "ex.lonely.example", 1), "", now)
    sent = scan_and_notify(store, seeded.config, CATALOG, now)
    assert all(s.tenant == "contoso" for s in sent)
    keys = [r.event_key for r in queries.list_notifications(store)]
    assert not any("lonely" in k or "fabrikam" in k for k in keys)
    # once a contact exists, the event goes out
    store.add_contact("lonely", "admin@lonely.example", ACTOR, now)
    assert events_of(scan_and_notify(store, seeded.config, CATALOG, now)) == [
        ("ex.lonely.example", "first_detected")
    ]


def test_failed_send_is_recorded_and_retried_once(seeded, smtp):  # type: ignore[no-untyped-def]
    sink, _ = smtp
    down = seeded.config.model_copy(
        update={
            "notify": NotifyConfig(
                enabled=True, relay=f"127.0.0.1:{free_port()}", sender="drossel@mx.example"
            )
        }
    )
    assert scan_and_notify(seeded.store, down, CATALOG, seeded.now) == []
    rows = queries.list_notifications(seeded.store)
    assert len(rows) == 3
    assert all(r.sent_at is None and r.attempts == 1 and r.last_error for r in rows)
    sent = scan_and_notify(seeded.store, seeded.config, CATALOG, seeded.now + timedelta(minutes=1))
    assert len(sent) == 3
    assert len(sink.messages) == 3
    assert (
        scan_and_notify(seeded.store, seeded.config, CATALOG, seeded.now + timedelta(minutes=2))
        == []
    )
    assert len(sink.messages) == 3


def test_concurrent_senders_send_once(seeded, smtp):  # type: ignore[no-untyped-def]
    sink, _ = smtp
    stores = [Store(seeded.store.url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    results: list[int] = []

    def run(store: Store) -> None:
        barrier.wait()
        results.append(len(scan_and_notify(store, seeded.config, CATALOG, seeded.now)))

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.dispose()
    assert sum(results) == 3
    assert len(sink.messages) == 3


def test_a_claim_taken_over_by_another_sender_is_sent_once(seeded, smtp):  # type: ignore[no-untyped-def]
    """The interleaving the concurrent test hit now and then: we claim an event, stall for
    longer than ``STALE_SECONDS``, another node's retry pass takes the row and starts
    sending; when we go on, we must not send it as well."""
    from drossel.notify.service import MAX_ATTEMPTS, RETRY_SECONDS, STALE_SECONDS

    sink, _ = smtp
    later = seeded.now + timedelta(seconds=STALE_SECONDS + 1)
    taken: list[int] = []

    class StallingStore(Store):
        def claim_notification(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            claimed = super().claim_notification(*args, **kwargs)
            if claimed and not taken:
                # the other node, a stale-time later: it finds our fresh claim unsent
                (row,) = queries.retryable_notifications(
                    self, later, MAX_ATTEMPTS, STALE_SECONDS, RETRY_SECONDS
                )
                assert queries.begin_attempt(self, row.id, row.attempts, later)
                taken.append(row.id)
            return claimed

    store = StallingStore(seeded.store.url)
    try:
        sent = scan_and_notify(store, seeded.config, CATALOG, seeded.now)
    finally:
        store.dispose()
    assert len(taken) == 1
    assert len(sent) == 2  # the taken event is the other node's to send
    assert len(sink.messages) == 2


def test_a_fresh_claim_is_not_retried_by_others(seeded):  # type: ignore[no-untyped-def]
    from drossel.notify.service import MAX_ATTEMPTS, RETRY_SECONDS, STALE_SECONDS

    assert seeded.store.claim_notification(
        "k", "contoso", "ex01.contoso.example", "x", "b", seeded.now
    )
    soon = seeded.now + timedelta(seconds=STALE_SECONDS - 1)
    assert (
        queries.retryable_notifications(
            seeded.store, soon, MAX_ATTEMPTS, STALE_SECONDS, RETRY_SECONDS
        )
        == []
    )


def test_header_text_cannot_inject_mail_headers(seeded, smtp):  # type: ignore[no-untyped-def]
    sink, _ = smtp
    evil = "ex9.contoso.example\r\nBcc: victim@example.org"
    seeded.store.save_server(server("contoso", evil, 1), "", seeded.now)
    scan_and_notify(seeded.store, seeded.config, CATALOG, seeded.now)
    for _, rcpt, msg in sink.messages:
        assert "victim@example.org" not in rcpt
        assert msg["Bcc"] is None


def test_due_events_are_pure(seeded):  # type: ignore[no-untyped-def]
    first = due_events(seeded.store, seeded.config, CATALOG, seeded.now)
    second = due_events(seeded.store, seeded.config, CATALOG, seeded.now)
    assert [e.key for e in first] == [e.key for e in second]
    assert queries.list_notifications(seeded.store) == []


async def test_run_notifier_loop(seeded, smtp):  # type: ignore[no-untyped-def]
    sink, _ = smtp
    stop = asyncio.Event()
    task = asyncio.create_task(run_notifier(seeded.store, seeded.config, seeded.clock, stop))
    for _ in range(100):
        if len(sink.messages) >= 3:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # a few more scans: nothing new
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(sink.messages) == 3


async def test_run_notifier_disabled(seeded):  # type: ignore[no-untyped-def]
    config = seeded.config.model_copy(update={"notify": NotifyConfig(enabled=False)})
    await asyncio.wait_for(run_notifier(seeded.store, config, seeded.clock, asyncio.Event()), 1)


def test_mails_announce_only_what_is_applied(seeded, smtp):  # type: ignore[no-untyped-def]
    """SPEC §7 (issue 9): a product report-only by rollout or a paused tenant gets no stage
    mail; a mail that goes out names the applied stage and rates."""
    from drossel.app.services import Services
    from drossel.config import Config
    from drossel.core.policy import Policy

    store, now = seeded.store, seeded.now
    by_schedule = events_of(due_events(store, seeded.config, CATALOG, now))
    assert ("mail.fabrikam.example", "block_start") in by_schedule  # stage 5 by the schedule
    rollout = Config(
        policy=Policy(rollout={"Exchange 2016": "report-only"}), notify=seeded.config.notify
    )
    assert due_events(store, rollout, CATALOG, now) == []
    Services(store, seeded.config).add_pause("fabrikam", now.date(), 10, [], ACTOR, now)
    events = due_events(store, seeded.config, CATALOG, now)
    assert all(e.tenant == "contoso" for e in events)
    (stage_mail,) = [e for e in events if e.server == "ex01.contoso.example"]
    assert stage_mail.subject == ("ex01.contoso.example: now stage 2 of 8 (5 min/h delayed (450))")
