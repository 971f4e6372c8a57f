"""``train()`` called directly (the CLI tests reach it through typer): the run folder, the typed metadata it writes,
the validation-chosen threshold, and the checks that run before any image is decoded."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from cadx.data.sources import DatasetError
from cadx.data.transforms import Preprocessing
from cadx.engine import datamodule
from cadx.engine.checkpoint import read_meta
from cadx.engine.config import build_config
from cadx.engine.evaluation import evaluate
from cadx.engine.training import resolve_preprocessing, train
from tests.conftest import make_class_folders


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("train")
    data = make_class_folders(base / "data", 16, size=40)
    config = build_config(model="simple_cnn", epochs=1, image_size=32, batch_size=8, early_stopping=0)
    return train(data, config, base / "run").output


def test_the_run_describes_itself(run: Path) -> None:
    meta = read_meta(run / "best.ckpt")
    assert meta == read_meta(run / "last.ckpt")  # the threshold chosen after training is written into both
    assert meta.preprocessing == Preprocessing(32, 1) and meta.config["epochs"] == 1
    assert meta.provenance.source == str(run.parent / "data") and meta.provenance.kind == "folder"
    assert sum(len(v) for v in meta.split.values()) == 32 and not (run / ".cache").exists()


def test_the_threshold_maximises_youden_on_validation(run: Path, tmp_path: Path) -> None:
    meta = read_meta(run / "best.ckpt")
    assert meta.threshold_source == "validation (Youden's J)"
    evaluate(run, split="val", output=tmp_path, n_bootstrap=5, threshold=0.5)  # validation probabilities
    with (tmp_path / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    y = np.array([int(r["target"]) for r in rows])
    p = np.array([float(r["p_pneumonia"]) for r in rows])

    def youden(t: float) -> float:
        return float(np.mean(p[y == 1] >= t) - np.mean(p[y == 0] >= t))

    best = max(youden(t) for t in np.unique(p))  # brute force over every cut, independent of roc_curve
    assert youden(meta.decision_threshold) == pytest.approx(best, abs=1e-6)


def test_checks_before_decoding(tmp_path: Path, run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("an image was decoded before the checks")

    monkeypatch.setattr(datamodule, "decode_records", no_decoding)
    data = make_class_folders(tmp_path / "d", 4, classes=("a", "b", "c"))
    with pytest.raises(DatasetError, match="already holds a run"):
        train(data, build_config(model="simple_cnn"), run)
    teacher_config = build_config(model="simple_cnn", image_size=32, teachers=[str(run / "best.ckpt")])
    with pytest.raises(DatasetError, match="this teacher predicts"):
        train(data, teacher_config, tmp_path / "r")
    with pytest.raises(DatasetError, match="--class-names gives 2 names"):
        train(data, build_config(model="simple_cnn", class_names=["x", "y"]), tmp_path / "r2")


def test_preprocessing_defaults_come_from_the_model() -> None:
    pre = resolve_preprocessing(build_config(model="small_cnn"))
    assert (pre.image_size, pre.channels, pre.mean, pre.std) == (28, 1, (0.5,), (0.25,))
    assert resolve_preprocessing(build_config(model="resnet18", image_size=64, in_channels=3)).channels == 3
