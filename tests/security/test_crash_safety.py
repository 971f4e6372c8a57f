"""Fault injection: ``create_study`` and ``delete_study`` crash at every step (a BaseException passes every
``except Exception`` cleanup, as a kill would; the database rolls the open transaction back, as it does for a dead
connection), then the app restarts on the same data folder and database: no row without its files, no files
without a row, nothing left in tmp. Retries with the same Idempotency-Key return the study the first request made."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cadx.server import storage as storage_module
from cadx.server.app import create_app
from cadx.server.db.repository import Repository, StudyFilter
from cadx.server.services import studies as studies_module
from cadx.server.services.studies import StudyRequest, delete_study
from cadx.server.services.uploads import receive_and_create
from cadx.server.settings import Settings
from tests.server.conftest import CLINICIAN, make_env
from tests.server.images import dicom_bytes, png_bytes

CHEST = "chest_xray_tiny"


class Crash(BaseException):
    """The process dies here."""


def _crash_after(target: object, name: str, calls: list[int], at: int) -> Callable:
    original = getattr(target, name)

    def wrapper(*args: object, **kwargs: object) -> object:
        result = original(*args, **kwargs)
        calls[0] += 1
        if calls[0] == at:
            raise Crash(name)
        return result

    return wrapper


def _crash_before(target: object, name: str) -> Callable:
    def wrapper(*args: object, **kwargs: object) -> object:
        raise Crash(name)

    return wrapper


# (where, before or after the call): every step of a study's write, in order
STEPS = [
    (studies_module, "write_private", "before"), (studies_module, "write_private", "after"),
    (studies_module, "_store_original", "after"), (Repository, "add_study", "after"),
    (Repository, "add_idempotency_key", "after"), (storage_module, "fsync_tree", "after"),
    (os, "replace", "before"), (os, "replace", "after"), (storage_module, "fsync_dir", "after"),
    (Repository, "commit", "before"), (Repository, "commit", "after"),
]


def invariants(settings: Settings) -> set[int]:
    """Restart (a new app on the same data) and check: every row has its files, every folder its row, tmp empty."""
    app = create_app(settings, log_first_admin=False)
    ctx = app.state.ctx
    with ctx.session_factory() as session:
        repo = Repository(session)
        rows, _ = repo.list_studies(StudyFilter(), 1, 1000)
        ids = {s.id for s in rows}
        for study in rows:
            for image in study.images:
                if image.error is None:
                    assert ctx.storage.original(study.id, image.position) is not None, (study.id, image.position)
                    assert ctx.storage.artefact(study.id, image.position, "image") is not None
    folders = {int(p.name) for p in ctx.storage.root.iterdir()}
    assert folders == ids, (folders, ids)
    assert list(ctx.storage.tmp.iterdir()) == []
    ctx.engine.dispose()
    return ids


@pytest.fixture
def crash_env(tmp_path: Path, models_dir: Path):  # noqa: ANN201
    yield from make_env("sqlite", f"sqlite:///{tmp_path / 'cadx.db'}", tmp_path, models_dir)


def _create(env, key: str | None = None) -> tuple[int, bool]:  # noqa: ANN001
    ctx = env.client.app.state.ctx
    with ctx.session_factory() as session:
        user = Repository(session).user_by_name(CLINICIAN[0])
        assert user is not None
        user_id = user.id
    request = StudyRequest(model_id=CHEST, patient_id="P-1", idempotency_key=key, address="127.0.0.9")
    return receive_and_create(ctx, user_id, request, [("a.png", io.BytesIO(png_bytes(1))),
                                                      ("b.dcm", io.BytesIO(dicom_bytes()))])


@pytest.mark.parametrize(("where", "name", "when"), STEPS, ids=[f"{n}-{w}" for _, n, w in STEPS])
def test_a_crash_at_any_step_of_create_leaves_a_consistent_store(crash_env, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
                                                                 where: object, name: str, when: str) -> None:
    before = invariants(crash_env.settings)
    with monkeypatch.context() as patch:
        patch.setattr(where, name, _crash_before(where, name) if when == "before"
                      else _crash_after(where, name, [0], 1))
        patch.setattr(storage_module.StudyStorage, "discard", lambda _self, _staging: None)  # no cleanup: killed
        with pytest.raises(Crash):
            _create(crash_env, key="retry-me")
    after = invariants(crash_env.settings)
    committed = (name, when) in (("commit", "after"),)
    assert after == before if not committed else len(after - before) == 1
    # the client did not get an answer and retries with the same key: one study in the end, never two
    study_id, _replayed = _create(crash_env, key="retry-me")
    again, replayed = _create(crash_env, key="retry-me")
    assert again == study_id and replayed
    final = invariants(crash_env.settings)
    assert len(final - before) == 1


@pytest.mark.parametrize("step", ["set_aside", "delete_study", "commit", "purge"])
def test_a_crash_during_delete_leaves_a_consistent_store(crash_env, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
                                                         step: str) -> None:
    study_id, _ = _create(crash_env)
    ctx = crash_env.client.app.state.ctx
    target = {"set_aside": ctx.storage, "purge": ctx.storage, "delete_study": Repository, "commit": Repository}[step]
    with monkeypatch.context() as patch:
        patch.setattr(target, step, _crash_after(target, step, [0], 1))
        with ctx.session_factory() as session:
            repo = Repository(session)
            study, admin = repo.get_study(study_id), repo.user_by_name("admin")
            assert study is not None
            with pytest.raises(Crash):
                delete_study(ctx, repo, study, admin)
    remaining = invariants(crash_env.settings)
    assert (study_id in remaining) == (step in ("set_aside", "delete_study"))


def test_retry_over_http_returns_the_same_study(model_env) -> None:  # noqa: ANN001
    def post() -> object:
        return model_env.client.post("/api/v1/studies", headers={**model_env.auth(), "Idempotency-Key": "k-123"},
                                     data={"model_id": CHEST}, files=[("files", ("a.png", png_bytes(1), "image/png"))])

    first, second = post(), post()
    assert first.status_code == 201 and second.status_code == 200
    assert second.headers["idempotent-replayed"] == "true" and first.json()["id"] == second.json()["id"]
    for key in ("bad key", "k" * 129):
        bad = model_env.client.post("/api/v1/studies", headers={**model_env.auth(), "Idempotency-Key": key},
                                    data={"model_id": CHEST}, files=[("files", ("a.png", png_bytes(1), "image/png"))])
        assert bad.status_code == 422 and set(bad.json()) == {"detail", "errors"}
        assert "Idempotency-Key" in bad.json()["detail"] and key not in bad.text
