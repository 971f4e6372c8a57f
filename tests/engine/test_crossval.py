"""K-fold cross-validation: chosen by the set's size, every image tested once out of fold, per-fold and pooled
figures written, and a final model trained on all of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cadx.data.sources import load_index
from cadx.data.splits import read_split_file
from cadx.engine.checkpoint import load_checkpoint
from cadx.engine.config import build_config
from cadx.engine.crossval import DEFAULT_FOLDS, SMALL_SET_IMAGES, choose_folds, plan_folds, t_interval
from cadx.interfaces.cli import app
from tests.conftest import make_class_folders, make_multilabel_manifest


def test_folds_are_chosen_by_the_size_of_the_set() -> None:
    folds, line = choose_folds(253, 2, None)
    assert folds == DEFAULT_FOLDS and "253 images in 2 classes" in line and "--folds 1" in line
    assert choose_folds(SMALL_SET_IMAGES, 3, None)[0] == 1
    assert "--folds 5 to cross-validate" in choose_folds(5000, 2, None)[1]
    assert choose_folds(5000, 2, 3) == (3, choose_folds(5000, 2, 3)[1]) and "as asked" in choose_folds(5000, 2, 3)[1]
    assert choose_folds(100, 2, 1)[0] == 1


def test_a_set_that_cannot_be_cross_validated_trains_once_by_default(tmp_path: Path) -> None:
    manifest = make_multilabel_manifest(tmp_path, 6)  # 12 images, several labels each
    folds, line = plan_folds(load_index(manifest), build_config(model="simple_cnn"))
    assert folds == 1 and "cross-validation is for single-label data" in line
    folds, line = plan_folds(load_index(make_class_folders(tmp_path / "d", 10)), build_config(devices=2))
    assert folds == 1 and "one device" in line
    assert plan_folds(load_index(tmp_path / "d"), build_config(folds=3))[0] == 3  # asked for: refused when run


def test_t_interval_over_folds() -> None:
    low, high = t_interval([0.8, 0.9, 0.85, 0.75, 0.95])
    assert low < 0.85 < high and high - low == pytest.approx(2 * 2.776 * 0.0791 / 5 ** 0.5, rel=1e-2)
    assert t_interval([0.9]) is None


def test_zero_flag_training_of_a_small_set_cross_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_class_folders(tmp_path / "scans", 20, size=40)
    monkeypatch.chdir(tmp_path)  # the run folder defaults to runs/<data folder>
    result = CliRunner().invoke(app, ["train", str(data), "--model", "simple_cnn", "--image-size", "32", "--epochs",
                                      "1", "--batch-size", "16"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # as the user reads it, whatever the terminal's width
    assert "plan: 40 images in 2 classes, a small set (under 1,000 images): 5-fold cross-validation" in said
    assert "--folds 1 to train once" in said and "pooled out of fold" in said
    run = tmp_path / "runs" / "scans"
    summary = json.loads((run / "cv_metrics.json").read_text())
    assert summary["folds"] == 5 and len(summary["per_fold"]) == 5
    assert summary["images_cross_validated"] == 40 == summary["pooled_out_of_fold"]["n_images"]
    assert sum(f["images"] for f in summary["per_fold"]) == 40
    accuracies = [f["accuracy"] for f in summary["per_fold"]]
    assert min(accuracies) <= summary["mean_over_folds"]["accuracy"] <= max(accuracies)
    index = load_index(data)
    held_out = set()
    for k in range(1, 6):
        fold = run / "folds" / f"fold_{k}"
        assert json.loads((fold / "held_out" / "metrics.json").read_text())["split"] == "test"
        splits = read_split_file(fold / "split.csv", index)
        test = {r.key for r in splits["test"]}
        assert not test & {r.key for r in splits["train"] + splits["val"]}
        held_out |= test
    assert held_out == {r.key for r in index.records}  # every image tested once, by a model that never saw it
    final = load_checkpoint(run / "best.ckpt")
    assert not final.meta.split.get("test") and len(final.meta.split["train"]) + len(final.meta.split["val"]) == 40
