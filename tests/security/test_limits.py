"""Resource limits: the request body limit before anything is spooled (declared or streamed), the per-request
pixel budget and the per-request analysis-time budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.conftest import Env, fresh_env
from tests.server.conftest import make_env
from tests.server.images import huge_png, png_bytes

CHEST = "chest_xray_tiny"


@pytest.fixture
def small_env(tmp_path: Path) -> Iterator[Env]:
    yield from fresh_env(tmp_path, max_request_mb=0.5)


def test_declared_length_over_the_limit_is_refused_at_once(small_env: Env) -> None:
    r = small_env.client.post("/api/v1/studies", headers={**small_env.auth(), "Content-Length": str(10 * 2**20)},
                              content=b"x" * 100)
    assert r.status_code == 413 and r.json() == {"detail": "request body exceeds the limit of 0.5 MB", "errors": []}


def test_streamed_body_is_stopped_at_the_limit(small_env: Env) -> None:
    sent = 0

    def body() -> Iterator[bytes]:  # chunked: no Content-Length to check up front
        nonlocal sent
        yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n\r\n"
        for _ in range(64):
            sent += 65536
            yield b"\0" * 65536

    r = small_env.client.post("/api/v1/studies", headers={**small_env.auth(),
                                                          "Content-Type": "multipart/form-data; boundary=b"},
                              content=body())
    assert r.status_code == 413 and r.json()["detail"] == "request body exceeds the limit of 0.5 MB"
    assert r.headers["x-content-type-options"] == "nosniff"
    spooled = [p for p in Path(small_env.settings.data_dir).rglob("*.upload")]
    assert spooled == []


@pytest.fixture
def budget_env(tmp_path: Path, models_dir: Path) -> Iterator[Env]:
    yield from make_env("sqlite", f"sqlite:///{tmp_path / 'cadx.db'}", tmp_path, models_dir,
                        max_request_pixels=250_000)


def test_pixel_budget_per_request(budget_env: Env) -> None:
    files = [(f"big-{n}.png", huge_png(100_000)) for n in range(4)]  # ~101k pixels each
    r = budget_env.client.post("/api/v1/studies", headers=budget_env.auth(), data={"model_id": CHEST},
                               files=[("files", (name, data, "image/png")) for name, data in files])
    assert r.status_code == 201
    results = r.json()["results"]
    assert [x["error"] is None for x in results] == [True, True, False, False]
    assert "budget of 250000 pixels is used up" in results[2]["error"]


@pytest.fixture
def slow_env(tmp_path: Path, models_dir: Path) -> Iterator[Env]:
    yield from make_env("sqlite", f"sqlite:///{tmp_path / 'cadx.db'}", tmp_path, models_dir,
                        max_request_seconds=0.001)


def test_analysis_time_budget_per_request(slow_env: Env) -> None:
    files = [(f"{n}.png", png_bytes(n % 2)) for n in range(3)]
    r = slow_env.client.post("/api/v1/studies", headers=slow_env.auth(), data={"model_id": CHEST},
                             files=[("files", (name, data, "image/png")) for name, data in files])
    assert r.status_code == 201
    errors = [x["error"] for x in r.json()["results"]]
    assert errors[0] is None and all("0.001 s of analysis time" in (e or "") for e in errors[1:])
