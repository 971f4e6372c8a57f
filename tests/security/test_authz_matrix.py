"""Every route of the app (read from ``app.routes``, so a new one cannot be forgotten) × no / garbage / expired /
tampered / revoked token × role."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from cadx.server.db.orm import AuthSession
from tests.security.conftest import CLINICIAN, Env, app_routes, token

PUBLIC = {("GET", "/health"), ("GET", "/api/v1/health"), ("POST", "/api/v1/auth/token"), ("GET", "/login"),
          ("POST", "/login"), ("POST", "/logout")}
PAGES = {("GET", "/"), ("GET", "/history"), ("GET", "/studies/{study_id}"), ("GET", "/docs")}  # → login page
ADMIN = {("DELETE", "/api/v1/studies/{study_id}"), ("GET", "/api/v1/audit"), ("GET", "/api/v1/audit/export.csv"),
         ("POST", "/api/v1/auth/users/{user_id}/revoke"), ("POST", "/api/v1/auth/unlock")}
VALUES = {"study_id": "1", "position": "0", "artefact": "image", "user_id": "1"}


def routes(app) -> list[tuple[str, str]]:  # noqa: ANN001
    return sorted((m, r.path) for r in app_routes(app) for m in r.methods)


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: VALUES[m.group(1)], path)


def test_every_route_is_classified(shared_env: Env) -> None:
    """A new route must be added here deliberately: protected by default, public or page only when listed."""
    known = {(m, p) for m, p in routes(shared_env.client.app)}
    assert known >= PUBLIC | PAGES | ADMIN, (PUBLIC | PAGES | ADMIN) - known
    assert len(known) > len(PUBLIC | PAGES | ADMIN)


def _bad_tokens(env: Env) -> dict[str, str]:
    expired, revoked = token(env.client, *CLINICIAN), token(env.client, *CLINICIAN)
    with env.client.app.state.ctx.session_factory() as s:
        digest = env.client.app.state.ctx.tokens.digest(expired)
        s.execute(update(AuthSession).where(AuthSession.token_hash == digest)
                  .values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
        s.commit()
    env.client.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {revoked}"})
    good = token(env.client, *CLINICIAN)
    return {"none": "", "garbage": "garbage", "expired": expired, "revoked": revoked,
            "tampered": good[:-2] + ("AA" if good[-2:] != "AA" else "BB"), "empty-ish": " ", "huge": "x" * 5000}


def test_protected_routes_refuse_bad_tokens(shared_env: Env) -> None:
    client = TestClient(shared_env.client.app)  # no cookie
    bad = _bad_tokens(shared_env)
    for method, path in routes(client.app):
        if (method, path) in PUBLIC:
            continue
        for name, value in bad.items():
            headers = {"Authorization": f"Bearer {value}"} if value else {}
            r = client.request(method, concrete(path), headers=headers, follow_redirects=False)
            if (method, path) in PAGES:
                assert r.status_code == 303 and r.headers["location"].startswith("/login"), (method, path, name)
            else:
                assert r.status_code == 401, (method, path, name, r.status_code)
                assert r.headers.get("WWW-Authenticate") == "Bearer" and set(r.json()) == {"detail", "errors"}


@pytest.mark.parametrize("role", ["clinician", "admin"])
def test_roles(shared_env: Env, role: str) -> None:
    client = TestClient(shared_env.client.app)
    name, password = CLINICIAN if role == "clinician" else ("admin", shared_env.admin_password)
    for method, path in routes(client.app):
        if (method, path) in PUBLIC | PAGES:
            continue
        headers = {"Authorization": f"Bearer {token(client, name, password)}"}  # fresh: logout ends one
        r = client.request(method, concrete(path), headers=headers, follow_redirects=False)
        if role == "clinician" and (method, path) in ADMIN:
            assert r.status_code == 403, (method, path)
        else:
            assert r.status_code not in (401, 403) and r.status_code < 500, (method, path, r.status_code)
