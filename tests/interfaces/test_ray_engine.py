"""cadx predict --engine ray: the predictor as a Ray Data stage on a local Ray started by the test gives every file
once, with the same rows as the local engine, and resumes like it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cadx.data.transforms import Preprocessing
from cadx.engine.checkpoint import META_KEY
from cadx.engine.meta import new_meta
from cadx.interfaces.cli import app
from cadx.models import create_model
from tests.conftest import synthetic_image

ray = pytest.importorskip("ray", reason="the ray engine is the optional extra cadx[ray]")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("ray")
    torch.manual_seed(0)
    model = create_model("simple_cnn", in_channels=1, num_classes=2).eval()
    meta = new_meta("simple_cnn", ["normal", "pneumonia"], Preprocessing(32, 1), title="Ray test model")
    checkpoint = base / "model.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, META_KEY: meta.to_dict()},
               checkpoint)
    rng = np.random.default_rng(0)
    images = base / "images"
    images.mkdir()
    for i in range(45):
        Image.fromarray(synthetic_image(i % 2, rng, 40)).save(images / f"img{i:02d}.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return checkpoint, images


def _rows(path: Path) -> dict[str, dict[str, str]]:
    return {row["file"]: row for row in csv.DictReader(path.open())}


def test_ray_engine_gives_the_local_engines_rows(local_ray, model_and_images, tmp_path: Path) -> None:
    checkpoint, images = model_and_images
    local, distributed = tmp_path / "local.csv", tmp_path / "ray.csv"
    runner = CliRunner()
    assert runner.invoke(app, ["predict", str(checkpoint), str(images), "--output", str(local)]).exit_code == 0
    result = runner.invoke(app, ["predict", str(checkpoint), str(images), "--output", str(distributed), "--engine",
                                 "ray", "--concurrency", "2", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    assert "46 image(s), 1 unreadable" in " ".join(result.output.split())
    expected, got = _rows(local), _rows(distributed)
    assert len(got) == 46 and sum(1 for _ in distributed.open()) == 47  # every file once, plus the header
    assert set(got) == set(expected)
    for file, row in expected.items():
        assert got[file]["prediction"] == row["prediction"] and got[file]["error"] == row["error"]
        if row["p_normal"]:
            assert float(got[file]["p_normal"]) == pytest.approx(float(row["p_normal"]), abs=1e-6)
    assert {row["backend"] for row in got.values()} == {"torch"}
    # resume on Ray: the rows kept, the rest appended, nothing twice
    lines = distributed.read_text().splitlines(keepends=True)
    distributed.write_text("".join(lines[:21]))
    again = runner.invoke(app, ["predict", str(checkpoint), str(images), "--output", str(distributed), "--engine",
                                "ray", "--resume"])
    assert again.exit_code == 0, again.output
    assert "26 image(s)" in " ".join(again.output.split())
    assert _rows(distributed).keys() == expected.keys() and sum(1 for _ in distributed.open()) == 47


def test_an_unknown_engine_is_refused_before_any_image(model_and_images) -> None:
    checkpoint, images = model_and_images
    result = CliRunner().invoke(app, ["predict", str(checkpoint), str(images), "--engine", "spark"])
    assert result.exit_code == 2 and "unknown engine 'spark'" in result.output
