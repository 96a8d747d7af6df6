"""Drive the real pages in headless Chromium (Debian's package) against uvicorn on loopback:
log in as a tenant admin, see the throttled server and its chart, create a pause and watch the
remaining budget drop.  Screenshots go to ``tmp_path`` (and ``$DROSSEL_SCREENSHOT_DIR``)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from drossel_seed import CONTOSO_TOKEN

from drossel.config import WebConfig
from drossel.web.app import create_app, serve_web

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live_url(seeded):  # type: ignore[no-untyped-def]
    app = create_app(seeded.store, seeded.config, seeded.clock)
    port = _free_port()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve_web(app, WebConfig(), stop, listen=f"127.0.0.1:{port}"))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    assert not thread.is_alive()


def test_tenant_admin_journey(live_url, tmp_path):  # type: ignore[no-untyped-def]
    sync_api = pytest.importorskip("playwright.sync_api")
    shots: list[Path] = []

    def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
        path = tmp_path / f"{len(shots) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on(
                "console",
                lambda m: (
                    errors.append(m.text)
                    if m.type == "error" and "Failed to load resource" not in m.text
                    else None
                ),
            )
            page.goto(f"{live_url}/")
            assert "/login" in page.url
            shot(page, "login")
            page.fill("#token", CONTOSO_TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url(f"{live_url}/t/contoso")
            body = page.inner_text("main")
            assert "ex01.contoso.example" in body
            assert "throttled" in body
            assert "Migrate to Exchange Server SE" in body
            assert "90 of 90 pause days left" in " ".join(body.split())
            shot(page, "overview")

            page.click("table.servers a:has-text('ex01.contoso.example')")
            page.wait_for_url("**/servers/ex01.contoso.example")
            assert page.locator("svg.chart rect").count() > 90
            assert page.locator("svg.timeline").count() == 1
            assert "today" in (page.text_content("svg.timeline") or "")
            assert "<script>" in page.inner_text("pre.evidence")  # shown as text, not run
            shot(page, "server")

            page.goto(f"{live_url}/t/contoso/pauses")
            shot(page, "pause-panel")
            page.fill("#days", "14")
            page.check("input[name=scope][value=chosen]")
            page.check("input[name=server][value='ex01.contoso.example']")
            page.click("text=Create pause")
            page.wait_for_url("**/pauses?done=pause_added")
            assert page.inner_text(".left-days") == "76"
            assert "The pause was created." in page.inner_text("main")
            shot(page, "pause-created")

            page.fill("#days", "80")
            page.click("text=Create pause")
            assert "only 76 of 90 days are left" in page.inner_text(".flash.err")
            shot(page, "pause-over-budget")

            page.goto(f"{live_url}/t/contoso")
            assert "paused until 2026-07-15" in page.inner_text("main")
            shot(page, "overview-paused")
            assert not errors, errors
        finally:
            browser.close()
    for path in shots:
        assert path.stat().st_size > 5000
    target = os.environ.get("DROSSEL_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for path in shots:
            shutil.copy(path, Path(target) / path.name)


BUILDS = {
    "Exchange 2016": "15.1.2507.16",
    "Exchange 2019": "15.2.1748.36",
    "Exchange SE": "15.2.2562.43",
}


@pytest.fixture
def crowd(seeded):  # type: ignore[no-untyped-def]
    """The seed plus 72 servers of the whole Internet in the default tenant and a third
    tenant: three products, clocks of every age, all three kinds of evidence."""
    from dataclasses import replace

    from drossel_seed import ACTOR, server

    store, now = seeded.store, seeded.now
    store.add_tenant("northwind", [], ACTOR, now)
    for i in range(72):
        product = list(BUILDS)[i % 3]
        tenant = "northwind" if i % 8 == 0 else "default"
        record = server(
            tenant,
            f"mx{i:02d}.{['alpha', 'beta', 'gamma'][i % 3]}-mail.example",
            None if i % 5 == 0 else (i * 7) % 120,
            build=BUILDS[product],
            product=product,
        )
        evidence = ["connector", "verified", "unverified"][i % 3 if i % 2 else 0]
        store.save_server(replace(record, evidence=evidence), "", now)
    return seeded


def test_operator_overview_journey(crowd, live_url, tmp_path):  # type: ignore[no-untyped-def]
    sync_api = pytest.importorskip("playwright.sync_api")
    from drossel_seed import OPERATOR_TOKEN

    shots: list[Path] = []

    def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
        path = tmp_path / f"overview-{len(shots) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    def rows(page) -> list[str]:  # type: ignore[no-untyped-def]
        return page.locator("table.overview td.server a").all_inner_texts()

    def column(page, css: str) -> list[str]:  # type: ignore[no-untyped-def]
        return [t.strip() for t in page.locator(f"table.overview td.{css}").all_inner_texts()]

    def apply(page) -> None:  # type: ignore[no-untyped-def]
        with page.expect_navigation():
            page.click("#f-apply")

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on(
                "console",
                lambda m: (
                    errors.append(m.text)
                    if m.type == "error" and "Failed to load resource" not in m.text  # favicon
                    else None
                ),
            )
            page.goto(f"{live_url}/")
            page.fill("#token", OPERATOR_TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url(f"{live_url}/operator/servers")
            total = int(page.inner_text("#total"))
            assert total == 76  # 72 + the seed's 4, the default tenant's servers included
            first_page = rows(page)
            assert len(first_page) == 50 and first_page == sorted(first_page)
            assert "default" in column(page, "tenant") and "northwind" in column(page, "tenant")
            assert page.locator("svg.stages rect").count() > 60
            shot(page, "all-servers")

            page.select_option("#f-product", "Exchange 2019")
            apply(page)
            assert "product=Exchange+2019" in page.url
            by_product = rows(page)
            assert 0 < len(by_product) < 50
            assert all("Exchange 2019" in t for t in column(page, "server + td + td"))
            shot(page, "product")

            page.select_option("#f-evidence", "verified")
            page.select_option("#f-stage", "8")
            apply(page)
            narrowed = rows(page)
            assert narrowed and set(narrowed) < set(by_product)
            assert all(t.startswith("verified") for t in column(page, "evidence"))
            assert all("stage 8" in t for t in column(page, "stage"))
            shot(page, "product-evidence-stage")

            page.select_option("#f-stage", "")
            page.select_option("#f-evidence", "")
            page.fill("#f-search", "BETA-MAIL")
            apply(page)
            searched = rows(page)
            assert searched and all("beta-mail" in name for name in searched)
            assert set(searched) <= set(by_product) | {n for n in searched if "beta" in n}
            shot(page, "search")

            page.click("a.reset")
            page.wait_for_url(f"{live_url}/operator/servers")
            with page.expect_navigation():
                page.click("a.sort[data-sort=stage]")
            with page.expect_navigation():
                page.click("a.sort[data-sort=stage]")  # again: highest stage first
            assert "order=desc" in page.url
            stages = [int(t.split(":")[0].split()[-1]) for t in column(page, "stage") if ":" in t]
            assert stages and stages == sorted(stages, reverse=True) and stages[0] == 8
            top = rows(page)
            shot(page, "sorted-by-stage")

            with page.expect_navigation():
                page.click("a[rel=next]")
            assert "page=2" in page.url
            assert "page 2 of 2" in page.inner_text("nav.pager")
            second = rows(page)
            assert len(second) == total - 50 and not set(second) & set(top)
            shot(page, "page-2")
            assert not errors, errors
        finally:
            browser.close()
    for path in shots:
        assert path.stat().st_size > 5000
    target = os.environ.get("DROSSEL_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for path in shots:
            shutil.copy(path, Path(target) / path.name)
