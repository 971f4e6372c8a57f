"""Cache-Control: no-store on everything but static files; HSTS and a Secure cookie when configured for TLS."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.security.conftest import CLINICIAN, Env, fresh_env, login_page, token


def test_no_store_everywhere_but_static(shared_env: Env) -> None:
    client = TestClient(shared_env.client.app)
    auth = {"Authorization": f"Bearer {token(client, *CLINICIAN)}"}
    for path in ("/api/v1/studies", "/api/v1/auth/me", "/api/v1/studies/1", "/api/v1/studies/1/report.pdf",
                 "/api/v1/studies/1/images/0/image.png", "/api/v1/studies/1/images/0/original", "/nope"):
        r = client.get(path, headers=auth)
        assert r.headers["cache-control"] == "no-store", path
    login_page(client, *CLINICIAN)
    for path in ("/", "/history", "/studies/1", "/login"):
        assert client.get(path, follow_redirects=False).headers["cache-control"] == "no-store", path
    assert "no-store" not in client.get("/static/style.css").headers.get("cache-control", "")
    assert "strict-transport-security" not in client.get("/health").headers


def test_tls_settings_send_hsts_and_a_secure_cookie(tmp_path: Path) -> None:
    for env in fresh_env(tmp_path, secure_cookies=True):
        client = TestClient(env.client.app, base_url="https://testserver")
        assert client.get("/health").headers["strict-transport-security"].startswith("max-age=")
        r = login_page(client, *CLINICIAN)
        assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()
        assert client.get("/api/v1/auth/me").status_code == 200
