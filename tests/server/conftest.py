"""Server test fixtures: tiny trained models, throw-away databases (SQLite, PostgreSQL, MariaDB), test clients.

Everything is made here: two 32-px models trained for one epoch on synthetic class folders through
``cadx train`` (seconds), and real database servers started on 127.0.0.1 when installed (else skipped).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cadx.engine.checkpoint import export_checkpoint, update_meta
from cadx.interfaces.cli import app as cli
from cadx.server.app import create_app
from cadx.server.bootstrap import add_user
from cadx.server.settings import Settings
from tests.conftest import make_class_folders
from tests.server.dbservers import Unavailable, create_database, start_mariadb, start_postgres

CLINICIAN = ("clara", "clinician-pass-1")
BACKENDS = ("sqlite", "postgresql", "mariadb")
_db_numbers = count(1)


def _train(root: Path, name: str, classes: tuple[str, ...], models: Path) -> Path:
    data = make_class_folders(root / f"{name}-data", n_per_class=10, classes=classes, size=40)
    run = root / f"{name}-run"
    result = CliRunner().invoke(cli, ["train", str(data), "--output", str(run), "--recipe", "small-cnn", "--epochs",
                                      "1", "--image-size", "32", "--batch-size", "8", "--num-workers", "0",
                                      "--folds", "1"])
    assert result.exit_code == 0, result.output
    return export_checkpoint(run / "best.ckpt", models / name / "model.ckpt")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """chest_xray_tiny (binary, with metrics.json and card), brain_mri_tiny (3 classes, no metrics),
    research_model (category from its metadata) and a broken checkpoint that must not be offered."""
    root = tmp_path_factory.mktemp("server-models")
    models = root / "models"
    chest = _train(root, "chest_xray_tiny", ("normal", "pneumonia"), models)
    result = CliRunner().invoke(cli, ["evaluate", str(root / "chest_xray_tiny-run"), "--output",
                                      str(chest.parent), "--bootstrap", "20", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    (chest.parent / "README.md").write_text("# chest_xray_tiny\nA test model.\n")
    _train(root, "brain_mri_tiny", ("glioma", "meningioma", "notumor"), models)
    research = models / "research_model" / "model.ckpt"
    research.parent.mkdir()
    shutil.copy(chest, research)
    update_meta(research, category="Chest X-ray", title="Research pneumonia model")
    (models / "broken").mkdir()
    (models / "broken" / "model.ckpt").write_bytes(b"not a checkpoint")
    return models


@dataclass
class Env:
    """A running app on one database backend, with an admin and a clinician."""

    backend: str
    client: TestClient
    settings: Settings
    admin_password: str
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, role: str = "clinician") -> dict[str, str]:
        if role not in self.tokens:
            name, password = ("admin", self.admin_password) if role == "admin" else CLINICIAN
            r = self.client.post("/api/v1/auth/token", data={"username": name, "password": password})
            assert r.status_code == 200, r.text
            self.tokens[role] = r.json()["access_token"]
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture(scope="session")
def db_servers() -> Iterator[dict[str, tuple[str | None, str | None]]]:
    """Started lazily, once per session: backend -> (server URL, None) or (None, reason it is unavailable)."""
    servers: dict[str, tuple[str | None, str | None]] = {}
    stops = []

    def get(backend: str) -> tuple[str | None, str | None]:
        if backend not in servers:
            try:
                url, stop = (start_postgres if backend == "postgresql" else start_mariadb)()
                stops.append(stop)
                servers[backend] = (url, None)
            except Unavailable as exc:
                servers[backend] = (None, str(exc))
        return servers[backend]

    yield get  # type: ignore[misc]
    for stop in stops:
        stop()


def database_url(backend: str, db_servers, tmp: Path) -> str:  # noqa: ANN001 - the fixture's getter
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'cadx.db'}"
    server, reason = db_servers(backend)
    if server is None:
        pytest.skip(f"{backend} unavailable: {reason}")
    return create_database(server, f"cadx_test_{next(_db_numbers)}")


def make_env(db_backend: str, url: str, tmp: Path, models: Path, **overrides: object) -> Iterator[Env]:
    settings = Settings(db_url=url, data_dir=tmp / "data", models_dir=models, secret_key="test-secret-key",
                        **{"max_upload_mb": 1.0, "max_pixels": 1_000_000, "feature_maps": 4, **overrides})
    web = create_app(settings)
    password = web.state.first_admin_password
    assert password, "a fresh database gets a first admin"
    add_user(web.state.ctx.session_factory, *CLINICIAN, role="clinician")
    with TestClient(web) as client:
        yield Env(db_backend, client, settings, password)


@pytest.fixture(scope="session", params=BACKENDS)
def env(request: pytest.FixtureRequest, db_servers, models_dir: Path,  # noqa: ANN001
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """The API on each database backend (tests using it run three times)."""
    tmp = tmp_path_factory.mktemp(f"env-{request.param}")
    yield from make_env(request.param, database_url(request.param, db_servers, tmp), tmp, models_dir)


@pytest.fixture(scope="session")
def sqlite_env(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """For page, cookie and CSRF tests, which do not depend on the database backend."""
    tmp = tmp_path_factory.mktemp("env-pages")
    yield from make_env("sqlite", f"sqlite:///{tmp / 'cadx.db'}", tmp, models_dir)
