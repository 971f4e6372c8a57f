"""``cadx serve --backend``: the out-of-distribution and flip-check passes run on the chosen backend, the model
list says which one each loaded model runs, and a backend a model cannot use falls back to torch (and says so)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cadx.engine.hardware import native_bf16
from tests.server.conftest import Env, make_env
from tests.server.images import png_bytes

CHEST = "chest_xray_tiny"


def serve(tmp: Path, models: Path, backend: str) -> Iterator[Env]:
    yield from make_env("sqlite", f"sqlite:///{tmp / 'cadx.db'}", tmp, models, backend=backend)


def backend_listed(env: Env) -> str | None:
    models = env.client.get("/api/v1/models", headers=env.auth()).json()
    return next(m["backend"] for c in models["categories"] for m in c["models"] if m["id"] == CHEST)


def upload(env: Env) -> dict:
    r = env.client.post("/api/v1/studies", headers=env.auth(), data={"model_id": CHEST},
                        files=[("files", ("chest.png", png_bytes(1), "image/png"))])
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.skipif(not native_bf16(torch.device("cpu")), reason="this CPU has no native bf16 (AVX512-BF16/AMX)")
def test_torch_bf16_backend_serves_and_is_listed(tmp_path: Path, models_dir: Path) -> None:
    for env in serve(tmp_path, models_dir, "torch-bf16"):
        assert backend_listed(env) is None  # not loaded yet
        study = upload(env)
        assert study["results"][0]["error"] is None and study["results"][0]["predicted_class"]
        assert backend_listed(env) == "torch-bf16"


def test_a_backend_the_model_cannot_use_falls_back_to_torch(tmp_path: Path, models_dir: Path) -> None:
    for env in serve(tmp_path, models_dir, "onnx"):  # the test models have no ONNX copies
        upload(env)
        assert backend_listed(env) == "torch"


def test_an_unknown_backend_is_refused_at_start(tmp_path: Path, models_dir: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="backend"):
        next(serve(tmp_path, models_dir, "tensorrt"))
