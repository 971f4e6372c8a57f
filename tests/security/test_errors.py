"""No 500 on any input: hostile numbers on every integer parameter (read from the routes) → 404/422, always the one
JSON error shape, never the input echoed; an unexpected exception is a JSON 500 with the headers, no traceback."""

from __future__ import annotations

import typing
from pathlib import Path

from fastapi.testclient import TestClient

from tests.security.conftest import CLINICIAN, Env, app_routes, fresh_env, token

HOSTILE = ["99999999999999999999999", "9223372036854775808", "9223372036854775807", "-9223372036854775809", "-1",
           "0", "1e3", "0x10", "NaN", "inf", "1.5", "%20", "\u0661", "9" * 400, "00000000000000000000001"]
FILL = {"study_id": "1", "position": "0", "artefact": "image", "user_id": "1"}


def int_params(app) -> list[tuple[str, str, str, str]]:  # noqa: ANN001
    """(method, path, where, name) for every integer path or query parameter of every route."""
    found = []
    for route in app_routes(app):
        for where, params in (("path", route.dependant.path_params), ("query", route.dependant.query_params)):
            for p in params:
                ann = p.field_info.annotation
                if int in (typing.get_args(ann) or (ann,)):
                    found += [(m, route.path, where, p.name) for m in route.methods]
    return found


def assert_shape(r, sent: str = "") -> None:  # noqa: ANN001
    body = r.json()
    assert set(body) == {"detail", "errors"} and isinstance(body["detail"], str) and isinstance(body["errors"], list)
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
    if len(sent) > 3:
        assert sent not in r.text


def test_hostile_integers_never_give_5xx(shared_env: Env) -> None:
    client = TestClient(shared_env.client.app)
    admin = {"Authorization": f"Bearer {token(client, 'admin', shared_env.admin_password)}"}
    params = int_params(client.app)
    assert {(p, n) for _, p, _, n in params} >= {("/api/v1/studies/{study_id}", "study_id"),
                                                 ("/api/v1/studies", "page"), ("/studies/{study_id}", "study_id")}
    for method, path, where, name in params:
        for value in HOSTILE:
            url = path.replace("{" + name + "}", value) if where == "path" else path
            url = url.format(**FILL)
            r = client.request(method, url, params={name: value} if where == "query" else None, headers=admin,
                               follow_redirects=False)
            assert r.status_code < 500, (method, url, name, value, r.status_code)
            if r.status_code in (404, 422) and r.headers["content-type"].startswith("application/json"):
                assert_shape(r, value if r.status_code == 422 else "")  # a parsed id may be named


def test_the_issue_examples(shared_env: Env) -> None:
    client = TestClient(shared_env.client.app)
    auth = {"Authorization": f"Bearer {token(client, *CLINICIAN)}"}
    for url in ("/api/v1/studies/99999999999999999999999", "/api/v1/studies/9223372036854775808/images/0/original",
                "/api/v1/studies?page=99999999999999999999"):
        r = client.get(url, headers=auth)
        assert r.status_code == 422, url
        assert_shape(r, "99999999999999999999")
    r = client.get("/api/v1/studies/9223372036854775807", headers=auth)
    assert r.status_code == 404 and r.json() == {"detail": "no study 9223372036854775807", "errors": []}


def test_validation_errors_name_the_field_not_the_input(shared_env: Env) -> None:
    client = TestClient(shared_env.client.app)
    auth = {"Authorization": f"Bearer {token(client, *CLINICIAN)}"}
    r = client.get("/api/v1/studies", params={"page": "<script>x</script>"}, headers=auth)
    assert r.status_code == 422 and "query.page" in r.json()["detail"] and "<script>" not in r.text
    r = client.post("/api/v1/auth/password", headers=auth, json={"current_password": "x", "new_password": "short"})
    assert r.status_code == 422 and "body.new_password" in r.json()["detail"]
    assert_shape(r)


def test_other_http_errors_have_the_same_shape(shared_env: Env) -> None:
    client = TestClient(shared_env.client.app)
    for r in (client.get("/api/v1/nothing-here"), client.put("/api/v1/auth/token"), client.get("/api/v1/studies")):
        assert r.status_code in (401, 404, 405)
        assert_shape(r)


def test_unexpected_exception_is_a_json_500_without_traceback(tmp_path: Path) -> None:
    for env in fresh_env(tmp_path):
        app = env.client.app

        @app.get("/api/v1/boom")
        def boom() -> None:
            raise RuntimeError("secret path /srv/cadx-data/tmp/study-1")

        r = TestClient(app).get("/api/v1/boom")
        assert r.status_code == 500 and r.json() == {"detail": "internal server error", "errors": []}
        assert_shape(r)
        assert "secret path" not in r.text and "Traceback" not in r.text
