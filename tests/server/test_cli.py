"""``cadx users add`` and real ``cadx serve`` processes: URL and first admin password printed, login works, and
several worker processes share one database safely."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cadx.interfaces.cli import app
from tests.server.conftest import database_url
from tests.server.dbservers import free_port
from tests.server.images import png_bytes


def test_users_add(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'u.db'}"
    runner = CliRunner()
    r = runner.invoke(app, ["users", "add", "bob", "--role", "clinician", "--password", "bob-secret-1", "--db", db])
    assert r.exit_code == 0 and "created" in r.output
    r = runner.invoke(app, ["users", "add", "bob", "--role", "clinician", "--password", "bob-secret-1", "--db", db])
    assert r.exit_code == 2 and "already exists" in r.output
    r = runner.invoke(app, ["users", "add", "eve", "--role", "root", "--password", "eve-secret-1", "--db", db])
    assert r.exit_code == 2 and "role must be one of admin, clinician" in r.output
    r = runner.invoke(app, ["users", "add", "ann", "--role", "admin", "--db", db], input="ann-secret-1\nann-secret-1\n")
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["users", "add", "joe", "--password", "short", "--db", db])
    assert r.exit_code == 2 and "at least 8 characters" in r.output


def test_serve_prints_url_and_first_admin(tmp_path: Path, models_dir: Path) -> None:
    port = free_port()
    cadx = Path(sys.executable).with_name("cadx")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(cadx), "serve", "--port", str(port), "--data-dir", str(tmp_path / "data"),
                             "--models", str(models_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
            if line.startswith("cadx is running at"):
                break
        assert f"cadx is running at http://127.0.0.1:{port}" in lines, lines
        password = next(x for x in lines if x.startswith("first admin: admin / ")).split(" / ")[1].split()[0]
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health").json()["database"] == "ok"
        token = httpx.post(f"{base}/api/v1/auth/token", data={"username": "admin", "password": password})
        assert token.status_code == 200
        models = httpx.get(f"{base}/api/v1/models",
                           headers={"Authorization": f"Bearer {token.json()['access_token']}"}).json()
        assert {c["name"] for c in models["categories"]} == {"Chest X-ray", "Brain MRI"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # the CLI adds users to the same default database in the data dir
    out = subprocess.run([str(cadx), "users", "add", "zoe", "--password", "zoe-secret-1", "--data-dir",
                          str(tmp_path / "data")], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "data" / "cadx.db").exists()


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_serve_with_two_worker_processes_stores_concurrent_studies_once(
        backend: str, tmp_path: Path, models_dir: Path, db_servers) -> None:  # noqa: ANN001 - the fixture's getter
    """8 clients upload at once to 2 worker processes on one database: every study stored once, none lost."""
    url = database_url(backend, db_servers, tmp_path)
    port = free_port()
    cadx = Path(sys.executable).with_name("cadx")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    added = subprocess.run([str(cadx), "users", "add", "zoe", "--password", "zoe-secret-1", "--db", url],
                           capture_output=True, text=True, env=env, timeout=120)
    assert added.returncode == 0, added.stderr
    proc = subprocess.Popen([str(cadx), "serve", "--port", str(port), "--db", url, "--data-dir", str(tmp_path / "d"),
                             "--models", str(models_dir), "--workers", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = ""
        while not line.startswith("cadx is running at"):
            line = proc.stdout.readline()
            assert line, "cadx serve ended before it was up"
        assert "(2 worker processes)" in line
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:  # the socket is bound before the workers have built their apps
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200 and len(_children(proc.pid)) >= 2:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the workers did not come up"
            time.sleep(0.5)
        token = httpx.post(f"{base}/api/v1/auth/token", data={"username": "zoe", "password": "zoe-secret-1"},
                           timeout=30).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}

        def upload(n: int) -> httpx.Response:
            return httpx.post(f"{base}/api/v1/studies", headers=headers, timeout=120,
                              data={"model_id": "chest_xray_tiny", "patient_id": f"W-{n}"},
                              files=[("files", (f"{n}.png", png_bytes(seed=n), "image/png"))])

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(upload, range(8)))
        assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
        ids = {r.json()["id"] for r in responses}
        listed = httpx.get(f"{base}/api/v1/studies", headers=headers, params={"limit": 50}, timeout=30).json()
        assert len(ids) == 8 and listed["total"] == 8 and {s["id"] for s in listed["items"]} == ids
        assert len({p.name for p in (tmp_path / "d" / "studies").iterdir() if p.name.isdigit()}) == 8
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_settings_travel_to_worker_processes_through_the_environment(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from cadx.server.settings import Settings

    given = Settings(data_dir=tmp_path / "d", models_dir=tmp_path / "m", max_upload_mb=7, torch_threads=1,
                     secure_cookies=True, backend="onnx", feature_maps=0)
    for name, value in given.to_env().items():
        monkeypatch.setenv(name, value)
    rebuilt = Settings()  # what each worker builds (cadx.server.app.app_from_env)
    assert rebuilt.database_url == given.database_url
    assert rebuilt.model_dump(exclude={"db_url"}) == given.model_dump(exclude={"db_url"})
