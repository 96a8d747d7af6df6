"""Session key outside the database, key rotation, optional login for /metrics and the API docs,
and the client address behind trusted proxies."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from drossel_seed import Seeded, auth
from fastapi.testclient import TestClient
from test_pages import csrf_of, login

from drossel.config import Config, WebConfig
from drossel.web.app import create_app
from drossel.web.auth import ClientAddress
from drossel.web.session_key import ENV, FILE_NAME, SessionKeyError, session_keys


def test_session_key_is_a_private_file_not_a_setting(seeded: Seeded, tmp_path: Path) -> None:
    create_app(seeded.store, seeded.config, seeded.clock)
    key_file = tmp_path / FILE_NAME  # beside the SQLite file when there is no config
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_text().strip()) == 64
    with seeded.store.engine.connect() as conn:
        keys = conn.exec_driver_sql("SELECT key FROM settings").scalars().all()
    assert "web.session_secret" not in keys


def test_key_rotation_keeps_sessions_of_the_previous_key(seeded: Seeded, tmp_path: Path) -> None:
    key_file = tmp_path / FILE_NAME
    key_file.write_text("a" * 64 + "\n")
    old_app = create_app(seeded.store, seeded.config, seeded.clock)
    with TestClient(old_app) as client:
        login(client, "contoso")
        cookie = client.cookies.get("drossel_session")
    key_file.write_text("# rotated\n" + "b" * 64 + "\n" + "a" * 64 + "\n")
    with TestClient(create_app(seeded.store, seeded.config, seeded.clock)) as client:
        client.cookies.set("drossel_session", cookie)
        assert client.get("/t/contoso", follow_redirects=False).status_code == 200
        # new forms are signed with the new key and accepted
        assert csrf_of(client.get("/t/contoso").text)
    key_file.write_text("b" * 64 + "\n")  # grace period over: the old key's cookies end
    with TestClient(create_app(seeded.store, seeded.config, seeded.clock)) as client:
        client.cookies.set("drossel_session", cookie)
        assert client.get("/t/contoso", follow_redirects=False).status_code == 303


def test_session_key_from_the_environment(
    seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "k" * 40)
    assert session_keys(seeded.config, seeded.store.url) == [b"k" * 40]
    assert not (tmp_path / FILE_NAME).exists()
    monkeypatch.setenv(ENV, "short")
    with pytest.raises(SessionKeyError, match="at least 32"):
        session_keys(seeded.config, seeded.store.url)


def test_shared_key_file_is_warned_about(
    seeded: Seeded, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = tmp_path / FILE_NAME
    key_file.write_text("c" * 64 + "\n")
    key_file.chmod(0o644)
    session_keys(seeded.config, seeded.store.url)
    assert "mode 0644" in caplog.text and str(key_file) in caplog.text


def _app(seeded: Seeded, peer: str = "testclient", **web: object) -> TestClient:
    config = seeded.config.model_copy(update={"web": WebConfig(**web)})  # type: ignore[arg-type]
    return TestClient(create_app(seeded.store, config, seeded.clock), client=(peer, 50000))


def test_metrics_and_docs_are_open_by_default(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/api/docs").status_code == 200


def test_metrics_auth_needs_an_operator(seeded: Seeded) -> None:
    with _app(seeded, metrics_auth=True) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=auth("contoso")).status_code == 403
        r = client.get("/metrics", headers=auth("operator"))
        assert r.status_code == 200 and "drossel" in r.text


def test_docs_auth_needs_a_login(seeded: Seeded) -> None:
    with _app(seeded, docs_auth=True) as client:
        assert client.get("/openapi.json").status_code == 401
        r = client.get("/api/docs", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        assert client.get("/openapi.json", headers=auth("contoso")).status_code == 200
        login(client, "operator")  # a browser session opens the docs too
        assert client.get("/api/docs").status_code == 200
        assert client.get("/openapi.json").json()["info"]["title"] == "drossel"


def test_forwarded_for_counts_only_from_trusted_proxies() -> None:
    plain = ClientAddress([])
    assert plain.of("10.0.0.5", ["198.51.100.7"]) == "10.0.0.5"
    proxied = ClientAddress(["10.0.0.0/8"])
    assert proxied.of("10.0.0.5", ["198.51.100.7"]) == "198.51.100.7"
    assert proxied.of("10.0.0.5", ["203.0.113.9, 198.51.100.7, 10.0.0.9"]) == "198.51.100.7"
    assert proxied.of("192.0.2.1", ["198.51.100.7"]) == "192.0.2.1"  # untrusted peer
    assert proxied.of("10.0.0.5", ["nonsense"]) == "10.0.0.5"
    assert proxied.of("10.0.0.5", []) == "10.0.0.5"


def test_one_client_behind_the_proxy_does_not_lock_out_the_others(seeded: Seeded) -> None:
    """Behind a trusted proxy each client has its own address limit."""
    limit = seeded.config.web.login_attempts_per_minute
    with _app(seeded, peer="10.0.0.5", trusted_proxies=["10.0.0.0/8"]) as client:
        for i in range(limit + 1):
            client.get(
                "/api/v1/me",
                headers={
                    "Authorization": f"Bearer drs_{i:04d}spray_zzzz",
                    "X-Forwarded-For": "198.51.100.66",
                },
            )
        attacker = {**auth("operator"), "X-Forwarded-For": "198.51.100.66"}
        assert client.get("/api/v1/me", headers=attacker).status_code == 429
        colleague = {**auth("operator"), "X-Forwarded-For": "198.51.100.77"}
        assert client.get("/api/v1/me", headers=colleague).status_code == 200


def test_trusted_proxies_must_be_networks() -> None:
    with pytest.raises(ValueError, match="not an IP network"):
        Config(web=WebConfig(trusted_proxies=["proxy.example"]))
