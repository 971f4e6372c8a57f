"""Every read of patient data is audited (user, time, study, action, client address); the admin-only CSV export;
owner-only files, folders and database; error messages without server paths."""

from __future__ import annotations

import csv
import io
import stat
from pathlib import Path

import pytest
from pypdf import PdfReader

from tests.security.conftest import Env
from tests.server.images import corrupt_png, png_bytes

CHEST = "chest_xray_tiny"


def upload(env: Env, files: list[tuple[str, bytes]], **fields: object):  # noqa: ANN201 - httpx.Response
    data = {"model_id": CHEST, **{k: str(v) for k, v in fields.items()}}
    return env.client.post("/api/v1/studies", headers=env.auth(), data=data,
                           files=[("files", (name, content, "application/octet-stream")) for name, content in files])


def audit(env: Env, **params: object) -> list[dict]:
    r = env.client.get("/api/v1/audit", params=params, headers=env.auth("admin"))
    assert r.status_code == 200
    return r.json()


@pytest.fixture(scope="module")
def study(model_env: Env) -> dict:
    r = upload(model_env, [("chest.png", png_bytes(1))], patient_id="AUD-1")
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize(("suffix", "action", "detail"), [
    ("", "view", None), ("/report.pdf", "export", "report.pdf"),
    ("/report.pdf?image=0", "export", "report.pdf image 0"),
    ("/images/0/original", "download", "original of image 0"),
    ("/images/0/thumbnail.png", "view_image", "thumbnail of image 0"),
    ("/images/0/image.png", "view_image", "image of image 0"),
    ("/images/0/overlay.png", "view_image", "overlay of image 0"),
])
def test_every_read_of_a_study_is_audited(model_env: Env, study: dict, suffix: str, action: str,
                                          detail: str | None) -> None:
    before = len(audit(model_env, study_id=study["id"], action=action))
    r = model_env.client.get(f"/api/v1/studies/{study['id']}{suffix}", headers=model_env.auth())
    assert r.status_code == 200
    events = audit(model_env, study_id=study["id"], action=action)
    assert len(events) == before + 1
    event = events[0]
    assert event["username"] == "clara" and event["detail"] == detail and event["at"]
    assert event["client_address"] == "testclient"  # Starlette's TestClient's address


def test_a_search_by_patient_and_a_plain_list_are_audited(model_env: Env, study: dict) -> None:
    before = len(audit(model_env, action="search"))
    assert model_env.client.get("/api/v1/studies", headers=model_env.auth()).status_code == 200
    assert len(audit(model_env, action="search")) == before
    listed = audit(model_env, action="list")[0]  # the page showed patient ids: which studies it showed is kept
    assert listed["detail"].startswith("page 1: studies ") and str(study["id"]) in listed["detail"]
    assert listed["client_address"] == "testclient"
    r = model_env.client.get("/api/v1/studies", params={"patient_id": "AUD-1"}, headers=model_env.auth())
    assert r.json()["total"] == 1
    event = audit(model_env, action="search")[0]
    assert event["detail"] == "patient_id AUD-1: 1 study" and event["client_address"] == "testclient"


def test_reading_the_audit_trail_is_audited(model_env: Env, study: dict) -> None:
    audit(model_env, action="view")
    event = audit(model_env, action="audit_view")[0]
    assert event["username"] == "admin" and event["detail"].startswith("action view, ")


def test_create_and_login_record_the_address(model_env: Env, study: dict) -> None:
    assert audit(model_env, study_id=study["id"], action="create")[0]["client_address"] == "testclient"
    assert audit(model_env, action="login")[0]["client_address"] == "testclient"


def test_audit_export_is_admin_only_csv_and_audited(model_env: Env, study: dict) -> None:
    assert model_env.client.get("/api/v1/audit/export.csv", headers=model_env.auth()).status_code == 403
    assert model_env.client.get("/api/v1/audit/export.csv").status_code == 401
    r = model_env.client.get("/api/v1/audit/export.csv", headers=model_env.auth("admin"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["cache-control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == ["id", "at", "username", "action", "study_id", "client_address", "detail"]
    ids = [int(row["id"]) for row in rows]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    assert any(row["action"] == "create" and row["study_id"] == str(study["id"]) for row in rows)
    assert audit(model_env, action="audit_export")[0]["username"] == "admin"
    future = model_env.client.get("/api/v1/audit/export.csv", params={"date_from": "2999-01-01"},
                                  headers=model_env.auth("admin"))
    assert future.text.strip().splitlines() == ["id,at,username,action,study_id,client_address,detail"]


def test_export_defuses_spreadsheet_formulas(model_env: Env) -> None:
    model_env.client.post("/api/v1/auth/token", data={"username": "=HYPERLINK(1)", "password": "x"})
    text = model_env.client.get("/api/v1/audit/export.csv", headers=model_env.auth("admin")).text
    details = [row["detail"] for row in csv.DictReader(io.StringIO(text)) if row["action"] == "login_failed"]
    assert details and all(not d.startswith("=") for d in details)


def test_files_folders_and_database_are_owner_only(model_env: Env, study: dict) -> None:
    data = Path(model_env.settings.data_dir)
    folders = [data, *[p for p in data.rglob("*") if p.is_dir()]]
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.name.startswith("original") for p in files)
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in folders} == {"0o700"}
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {"0o600"}
    db = Path(model_env.settings.database_url.removeprefix("sqlite:///"))
    assert oct(stat.S_IMODE(db.stat().st_mode)) == "0o600"


def test_error_messages_name_the_file_never_a_server_path(model_env: Env) -> None:
    r = upload(model_env, [("broken scan.png", corrupt_png()), ("fine.png", png_bytes(0))])
    assert r.status_code == 201
    bad = r.json()["results"][0]
    assert bad["filename"] == "broken scan.png" and bad["error"]
    data = str(Path(model_env.settings.data_dir).resolve())
    pdf = model_env.client.get(r.json()["report_url"], headers=model_env.auth()).content
    page = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
    assert "could not be analysed" in page
    for text in (r.text, page):
        assert data not in text and "/tmp/" not in text and ".upload" not in text
    only = upload(model_env, [("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)])
    assert only.status_code in (415, 422)
    assert only.json()["errors"][0]["filename"] == "broken.png"
    assert data not in only.text and ".upload" not in only.text
