"""Security test fixtures: apps on throw-away SQLite databases with no models (nothing here needs a prediction),
a clock to move, and helpers to log in."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cadx.server.services import auth as auth_service
from cadx.server.services import sessions as session_service
from tests.server.conftest import CLINICIAN, Env, make_env, models_dir  # noqa: F401 - models_dir is a fixture

__all__ = ["CLINICIAN", "Env", "Clock", "login_page", "token"]


def fresh_env(tmp: Path, **overrides: object) -> Iterator[Env]:
    (tmp / "models").mkdir(parents=True, exist_ok=True)
    yield from make_env("sqlite", f"sqlite:///{tmp / 'cadx.db'}", tmp, tmp / "models", **overrides)


@pytest.fixture
def app_env(tmp_path: Path) -> Iterator[Env]:
    """A fresh app per test (throttling and revocation change state)."""
    yield from fresh_env(tmp_path)


@pytest.fixture(scope="module")
def shared_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    yield from fresh_env(tmp_path_factory.mktemp("security"))


@pytest.fixture(scope="module")
def model_env(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Env]:  # noqa: F811
    """An app with the tiny test models, for what needs a real upload (de-identification, audit, limits)."""
    tmp = tmp_path_factory.mktemp("security-models")
    yield from make_env("sqlite", f"sqlite:///{tmp / 'cadx.db'}", tmp, models_dir)


class Clock:
    """Replaces the one clock of sessions and throttling."""

    def __init__(self) -> None:
        self.t = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(session_service, "now", c)
    monkeypatch.setattr(auth_service, "now", c)
    return c


def token(client: TestClient, username: str, password: str) -> str:
    r = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def csrf_of(html: str) -> str:
    import re

    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def login_page(client: TestClient, username: str, password: str):  # noqa: ANN201 - httpx.Response
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": csrf_of(client.get("/login").text)}, follow_redirects=False)


def app_routes(app) -> list:  # noqa: ANN001 - a FastAPI app
    """Every endpoint of ``app.routes`` with its path, methods and dependant (FastAPI nests included routers;
    static mounts are not endpoints)."""
    found = []
    for route in app.routes:
        for ctx in getattr(route, "effective_route_contexts", lambda r=route: [r])():
            if getattr(ctx, "methods", None) and getattr(ctx, "dependant", None) is not None:
                found.append(ctx)
    return found
