"""``cadx users add`` and a real ``cadx serve`` process: URL and first admin password printed, login works."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from cadx.interfaces.cli import app
from tests.server.dbservers import free_port


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
