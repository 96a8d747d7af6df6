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
