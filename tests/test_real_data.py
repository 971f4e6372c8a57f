"""Real-data checks on ../shared/datasets (skipped with a reason when it is absent)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cadx.data.sources import load_index
from cadx.data.splits import assign_splits
from cadx.interfaces.cli import app

pytestmark = pytest.mark.slow


def test_kermany_validation_is_patient_grouped(shared_datasets: Path) -> None:
    index = load_index(shared_datasets / "chest_xray_kermany")
    assert index.classes == ["NORMAL", "PNEUMONIA"]
    assert len(index.records) == 1341 + 3875 + 234 + 390
    splits, _ = assign_splits(index, seed=0)
    assert len(splits["test"]) == 624  # the official test/ folder stays the test split
    owner: dict[str, str] = {}
    for name in ("train", "val"):
        for r in splits[name]:
            assert r.patient is not None, r.key
            assert owner.setdefault(r.patient, name) == name, f"{r.patient} in train and val"
    assert 0.17 < len(splits["val"]) / (len(splits["train"]) + len(splits["val"])) < 0.23


def test_pneumoniamnist_small_cnn_learns(shared_datasets: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    npz = shared_datasets / "pneumoniamnist" / "pneumoniamnist_28.npz"
    result = runner.invoke(app, ["train", str(npz), "--recipe", "small-cnn", "--epochs", "2", "--class-names",
                                 "normal,pneumonia", "--output", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_images"] == 624 and metrics["classes"] == ["normal", "pneumonia"]
    assert metrics["auc"] > 0.85  # MedMNIST v2 reports 0.944 for ResNet-18 after 100 epochs
