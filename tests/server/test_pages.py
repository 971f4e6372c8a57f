"""The page side: login form with CSRF, session cookie, CSRF on cookie-authenticated writes, docs, escaping."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.server.conftest import CLINICIAN, Env
from tests.server.images import png_bytes


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page carries a CSRF token"
    return match.group(1)


def login(client: TestClient, username: str, password: str, next_: str = "/") -> tuple[int, str]:
    token = _csrf(client.get("/login").text)
    r = client.post("/login", data={"username": username, "password": password, "csrf_token": token, "next": next_},
                    follow_redirects=False)
    return r.status_code, r.headers.get("location", r.text)


def fresh_client(env: Env) -> TestClient:
    return TestClient(env.client.app)


def test_pages_redirect_to_login(sqlite_env: Env) -> None:
    client = fresh_client(sqlite_env)
    for path in ("/", "/history", "/studies/1", "/docs"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    login_page = client.get("/login")
    assert login_page.status_code == 200 and 'type="password"' in login_page.text
    assert client.get("/static/style.css").status_code == 200  # static assets need no login
    assert client.get("/static/docs/swagger-ui-bundle.js").status_code == 200


def test_login_form_needs_csrf_and_right_password(sqlite_env: Env) -> None:
    client = fresh_client(sqlite_env)
    r = client.post("/login", data={"username": CLINICIAN[0], "password": CLINICIAN[1]}, follow_redirects=False)
    assert r.status_code == 403 and "expired" in r.text
    assert login(client, CLINICIAN[0], "wrong-password")[0] == 401
    status, location = login(client, *CLINICIAN, next_="//evil.example/x")
    assert status == 303 and location == "/"  # never redirect off-site
    page = client.get("/")
    assert page.status_code == 200 and "clara" in page.text and 'id="dropzone"' in page.text
    assert "content-security-policy" in page.headers and "script-src" not in page.headers["content-security-policy"]
    assert client.get("/history").status_code == 200
    assert client.get("/api/v1/auth/me").json()["username"] == "clara"  # the cookie works for the API


def test_cookie_writes_need_the_csrf_header(sqlite_env: Env) -> None:
    client = fresh_client(sqlite_env)
    login(client, *CLINICIAN)
    token = _csrf(client.get("/").text)
    send = {"data": {"model_id": "chest_xray_tiny"}, "files": [("files", ("a.png", png_bytes(), "image/png"))]}
    assert client.post("/api/v1/studies", **send).status_code == 403
    assert client.post("/api/v1/studies", headers={"X-CSRF-Token": "forged"}, **send).status_code == 403
    r = client.post("/api/v1/studies", headers={"X-CSRF-Token": token}, **send)
    assert r.status_code == 201
    sid = r.json()["id"]
    assert client.get(f"/studies/{sid}").status_code == 200
    assert client.delete(f"/api/v1/studies/{sid}", headers={"X-CSRF-Token": token}).status_code == 403  # clinician


def test_logout_needs_csrf(sqlite_env: Env) -> None:
    client = fresh_client(sqlite_env)
    login(client, *CLINICIAN)
    client.post("/logout", data={"csrf_token": "forged"})
    assert client.get("/", follow_redirects=False).status_code == 200  # still logged in
    client.post("/logout", data={"csrf_token": _csrf(client.get("/").text)})
    assert client.get("/", follow_redirects=False).status_code == 303


def test_docs_and_openapi_are_local_and_complete(sqlite_env: Env) -> None:
    client = fresh_client(sqlite_env)
    login(client, "admin", sqlite_env.admin_password)
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/docs/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ("/api/v1/models", "/api/v1/studies", "/api/v1/studies/{study_id}",
                 "/api/v1/studies/{study_id}/report.pdf", "/api/v1/auth/token", "/api/v1/health", "/api/v1/audit"):
        assert path in paths, path
    upload = paths["/api/v1/studies"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    fields = schema["components"]["schemas"][upload.rsplit("/", 1)[1]]["properties"]
    assert {"files", "model_id", "threshold", "patient_id", "note"} <= set(fields)
    assert "/login" not in paths and "/" not in paths  # pages stay out of the API schema


def test_user_text_is_escaped_in_pages(sqlite_env: Env) -> None:
    client = fresh_client(sqlite_env)
    token = _csrf(client.get("/login").text)
    r = client.post("/login", data={"username": "<script>alert(1)</script>", "password": "x", "csrf_token": token})
    assert r.status_code == 401 and "<script>alert(1)</script>" not in r.text and "&lt;script&gt;" in r.text


def test_no_cdn_anywhere(sqlite_env: Env) -> None:
    from cadx.server import app as app_module

    root = app_module.HERE
    for path in list((root / "templates").glob("*.html")) + list((root / "static").rglob("*.*")):
        text = path.read_text(errors="ignore")
        assert not re.search(r"(src|href)=\"https?://", text), path
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text, path  # text only, never markup
