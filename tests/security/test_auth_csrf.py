"""CSRF on the page: the login and logout forms and every cookie-authenticated write need the session's token."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.security.conftest import CLINICIAN, Env, csrf_of, login_page


def test_login_form_without_or_with_a_forged_token_is_refused(shared_env: Env) -> None:
    client = TestClient(shared_env.client.app)
    client.get("/login")
    for data in ({}, {"csrf_token": "forged"}):
        r = client.post("/login", data={"username": CLINICIAN[0], "password": CLINICIAN[1], **data},
                        follow_redirects=False)
        assert r.status_code == 403
    assert client.get("/api/v1/auth/me").status_code == 401


def test_cookie_writes_need_the_header_bearer_writes_do_not(shared_env: Env) -> None:
    client = TestClient(shared_env.client.app)
    login_page(client, *CLINICIAN)
    assert client.post("/api/v1/auth/logout").status_code == 403  # cross-site post: no header
    assert client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert client.get("/api/v1/auth/me").status_code == 200
    good = csrf_of(client.get("/").text)
    assert client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": good}).status_code == 204
    assert client.get("/api/v1/auth/me").status_code == 401
