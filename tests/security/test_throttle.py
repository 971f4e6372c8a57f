"""Login throttling: back-off, lock after at most 10 failures, 429 + Retry-After on the API and the page, admin
unlock (API and CLI), shared by two app instances on one database, audited."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from cadx.interfaces.cli import app as cli
from cadx.server.app import create_app
from cadx.server.db.orm import AuditEvent
from tests.security.conftest import CLINICIAN, Clock, Env, login_page


def attempt(client: TestClient, password: str, username: str = CLINICIAN[0]):  # noqa: ANN201
    return client.post("/api/v1/auth/token", data={"username": username, "password": password})


def fail(env: Env, clock: Clock, times: int, username: str = CLINICIAN[0]) -> None:
    """Wrong passwords, each after any back-off has passed (a patient attacker)."""
    for _ in range(times):
        assert attempt(env.client, "wrong-password", username).status_code == 401
        clock.advance(20)


def test_back_off_then_lock_after_ten_failures(app_env: Env, clock: Clock) -> None:
    fail(app_env, clock, 4)
    assert attempt(app_env.client, "wrong-password").status_code == 401  # 5th: back-off starts after it
    r = attempt(app_env.client, CLINICIAN[1])
    assert r.status_code == 429 and r.headers["Retry-After"] == "1" and r.json()["errors"] == []
    clock.advance(2)
    fail(app_env, clock, 4)  # failures 6-9
    assert attempt(app_env.client, "wrong-password").status_code == 401  # 10th locks
    r = attempt(app_env.client, CLINICIAN[1])
    assert r.status_code == 429 and 14 * 60 < int(r.headers["Retry-After"]) <= 15 * 60
    page = login_page(TestClient(app_env.client.app), *CLINICIAN)
    assert page.status_code == 429 and "Retry-After" in page.headers and "try again" in page.text
    clock.advance(15 * 60 + 1)
    assert attempt(app_env.client, CLINICIAN[1]).status_code == 200


def test_page_login_failures_count_too(app_env: Env, clock: Clock) -> None:
    page = TestClient(app_env.client.app)
    for _ in range(10):
        assert login_page(page, CLINICIAN[0], "wrong-password").status_code == 401
        clock.advance(20)
    assert attempt(app_env.client, CLINICIAN[1]).status_code == 429


def test_address_is_throttled_across_accounts(app_env: Env, clock: Clock) -> None:
    for n in range(10):
        assert attempt(app_env.client, "wrong-password", f"nobody{n}").status_code == 401
        clock.advance(20)
    r = attempt(app_env.client, app_env.admin_password, "admin")  # same client address
    assert r.status_code == 429


def test_admin_unlocks_and_it_is_audited(app_env: Env, clock: Clock) -> None:
    admin = app_env.auth("admin")  # before the address is locked
    fail(app_env, clock, 10)
    assert attempt(app_env.client, CLINICIAN[1]).status_code == 429
    clinician_cannot = app_env.client.post("/api/v1/auth/unlock", json={"username": CLINICIAN[0]},
                                           headers={"Authorization": "Bearer garbage"})
    assert clinician_cannot.status_code == 401
    r = app_env.client.post("/api/v1/auth/unlock", json={"username": CLINICIAN[0], "address": "testclient"},
                            headers=admin)
    assert r.status_code == 200 and r.json()["count"] == 2
    assert attempt(app_env.client, CLINICIAN[1]).status_code == 200
    with app_env.client.app.state.ctx.session_factory() as s:
        actions = [a for a in s.scalars(select(AuditEvent.action))]
    assert actions.count("login_failed") == 10 and "login_locked" in actions and "unlock" in actions
    assert "login" in actions
    listed = app_env.client.get("/api/v1/audit", params={"action": "login_failed"}, headers=admin)
    assert listed.status_code == 200 and [e["action"] for e in listed.json()] == ["login_failed"] * 10


def test_cli_unlock(app_env: Env, clock: Clock) -> None:
    fail(app_env, clock, 10)
    result = CliRunner().invoke(cli, ["users", "unlock", CLINICIAN[0], "--address", "testclient", "--db",
                                      app_env.settings.database_url])
    assert result.exit_code == 0, result.output
    assert attempt(app_env.client, CLINICIAN[1]).status_code == 200


def test_two_app_instances_share_the_lock(app_env: Env, clock: Clock, tmp_path: Path) -> None:
    other = create_app(app_env.settings.model_copy())
    with TestClient(other) as second:
        fail(app_env, clock, 10)
        assert attempt(second, CLINICIAN[1]).status_code == 429
