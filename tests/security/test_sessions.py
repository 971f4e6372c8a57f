"""Sessions end when they should: logout (bearer and cookie), password change, an admin's revoke, expiry."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.security.conftest import CLINICIAN, Clock, Env, csrf_of, login_page, token


def bearer(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


def test_api_token_is_short_lived_and_expires(app_env: Env, clock: Clock) -> None:
    r = app_env.client.post("/api/v1/auth/token", data={"username": CLINICIAN[0], "password": CLINICIAN[1]})
    assert r.json()["expires_in"] == 15 * 60
    t = r.json()["access_token"]
    assert app_env.client.get("/api/v1/auth/me", headers=bearer(t)).status_code == 200
    clock.advance(15 * 60 + 1)
    assert app_env.client.get("/api/v1/auth/me", headers=bearer(t)).status_code == 401


def test_bearer_logout_revokes_that_token_only(app_env: Env) -> None:
    first, second = token(app_env.client, *CLINICIAN), token(app_env.client, *CLINICIAN)
    assert app_env.client.post("/api/v1/auth/logout", headers=bearer(first)).status_code == 204
    assert app_env.client.get("/api/v1/auth/me", headers=bearer(first)).status_code == 401
    assert app_env.client.get("/api/v1/auth/me", headers=bearer(second)).status_code == 200


def test_copied_cookie_is_refused_after_page_logout(app_env: Env) -> None:
    client = TestClient(app_env.client.app)
    assert login_page(client, *CLINICIAN).status_code == 303
    copied = dict(client.cookies)
    assert client.get("/api/v1/auth/me").status_code == 200
    client.post("/logout", data={"csrf_token": csrf_of(client.get("/").text)})
    thief = TestClient(app_env.client.app, cookies=copied)
    assert thief.get("/api/v1/auth/me").status_code == 401
    assert thief.get("/history", follow_redirects=False).status_code == 303  # to the login page


def test_page_logout_needs_the_csrf_token(app_env: Env) -> None:
    client = TestClient(app_env.client.app)
    login_page(client, *CLINICIAN)
    client.post("/logout", data={"csrf_token": "forged"})
    assert client.get("/api/v1/auth/me").status_code == 200


def test_password_change_ends_every_session(app_env: Env) -> None:
    page = TestClient(app_env.client.app)
    login_page(page, *CLINICIAN)
    t = token(app_env.client, *CLINICIAN)
    wrong = app_env.client.post("/api/v1/auth/password", headers=bearer(t),
                                json={"current_password": "nope-nope", "new_password": "a-new-password-1"})
    assert wrong.status_code == 403 and page.get("/api/v1/auth/me").status_code == 200
    r = app_env.client.post("/api/v1/auth/password", headers=bearer(t),
                            json={"current_password": CLINICIAN[1], "new_password": "a-new-password-1"})
    assert r.status_code == 204
    assert app_env.client.get("/api/v1/auth/me", headers=bearer(t)).status_code == 401
    assert page.get("/api/v1/auth/me").status_code == 401
    token(app_env.client, CLINICIAN[0], "a-new-password-1")


def test_admin_revokes_a_users_sessions(app_env: Env) -> None:
    t = token(app_env.client, *CLINICIAN)
    me = app_env.client.get("/api/v1/auth/me", headers=bearer(t)).json()
    assert app_env.client.post(f"/api/v1/auth/users/{me['id']}/revoke", headers=bearer(t)).status_code == 403
    r = app_env.client.post(f"/api/v1/auth/users/{me['id']}/revoke", headers=app_env.auth("admin"))
    assert r.status_code == 200 and r.json()["count"] == 1
    assert app_env.client.get("/api/v1/auth/me", headers=bearer(t)).status_code == 401
    assert app_env.client.post("/api/v1/auth/users/999999/revoke", headers=app_env.auth("admin")).status_code == 404


def test_database_holds_no_usable_token(app_env: Env) -> None:
    from sqlalchemy import select

    from cadx.server.db.orm import AuthSession

    t = token(app_env.client, *CLINICIAN)
    with app_env.client.app.state.ctx.session_factory() as s:
        hashes = list(s.scalars(select(AuthSession.token_hash)))
    assert hashes and t not in hashes
    assert app_env.client.get("/api/v1/auth/me", headers=bearer(hashes[-1])).status_code == 401


def test_account_actions_are_audited_with_the_client_address(app_env: Env) -> None:
    """Logout (bearer and page), password change, an admin's revoke and unlock: who, what and from where."""
    client = TestClient(app_env.client.app)
    login_page(client, *CLINICIAN)
    client.post("/logout", data={"csrf_token": csrf_of(client.get("/").text)})
    t = token(app_env.client, *CLINICIAN)
    me = app_env.client.get("/api/v1/auth/me", headers=bearer(t)).json()
    app_env.client.post("/api/v1/auth/logout", headers=bearer(t))
    t = token(app_env.client, *CLINICIAN)
    app_env.client.post("/api/v1/auth/password", headers=bearer(t),
                        json={"current_password": CLINICIAN[1], "new_password": "a-new-password-1"})
    admin = app_env.auth("admin")
    app_env.client.post(f"/api/v1/auth/users/{me['id']}/revoke", headers=admin)
    app_env.client.post("/api/v1/auth/unlock", headers=admin, json={"username": CLINICIAN[0]})
    events = app_env.client.get("/api/v1/audit", headers=admin, params={"limit": 100}).json()
    by_action: dict[str, list[dict]] = {}
    for e in events:
        by_action.setdefault(e["action"], []).append(e)
    assert len(by_action["logout"]) == 2 and {e["detail"] for e in by_action["logout"]} == {"page", None}
    for action, user in (("logout", CLINICIAN[0]), ("password", CLINICIAN[0]), ("revoke", "admin"),
                         ("unlock", "admin")):
        assert by_action[action], action
        for e in by_action[action]:
            assert e["username"] == user and e["client_address"] == "testclient", (action, e)
