"""``evaluate()`` called directly: records chosen by split, classes remapped, predictions.csv carries the decision."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cadx.data.sources import DatasetError
from cadx.data.transforms import Preprocessing
from cadx.engine.checkpoint import META_KEY, load_checkpoint
from cadx.engine.decision import decide
from cadx.engine.evaluation import evaluate
from cadx.engine.meta import Provenance, new_meta
from cadx.engine.selection import select_records
from cadx.models import create_model
from tests.conftest import make_class_folders


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """An untrained network whose checkpoint records class folders and a split of them (no training needed)."""
    data = make_class_folders(tmp_path / "data", 6, size=40)
    keys = sorted(str(p.relative_to(data)) for p in data.rglob("*.png"))
    torch.manual_seed(0)
    model = create_model("simple_cnn", in_channels=1, num_classes=2)
    meta = new_meta("simple_cnn", ["normal", "pneumonia"], Preprocessing(32, 1), decision_threshold=0.45,
                    threshold_source="validation (Youden's J)", split={"test": tuple(keys[::2]), "val": ()},
                    provenance=Provenance(source=str(data), kind="folder", patient_pattern=None))
    path = tmp_path / "run" / "best.ckpt"
    path.parent.mkdir()
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, META_KEY: meta.to_dict()},
               path)
    return path


def test_predictions_csv_carries_each_decision(checkpoint: Path, tmp_path: Path) -> None:
    metrics = evaluate(checkpoint, output=tmp_path / "out", n_bootstrap=10, batch_size=4)
    assert metrics["n_images"] == 6 and metrics["threshold"] == 0.45
    assert metrics["threshold_source"] == "checkpoint: validation (Youden's J)"
    meta = load_checkpoint(checkpoint).meta
    with (tmp_path / "out" / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["file", "target", "decision", "assessed", "reason", "uncertain", "uncertain_reason",
                             "p_normal", "p_pneumonia"]
    assert all(r["assessed"] == "1" and r["reason"] == "" for r in rows)  # clean images, no fitted score
    for r in rows:
        probs = np.array([float(r["p_normal"]), float(r["p_pneumonia"])])
        assert r["decision"] == "|".join(decide(probs, meta).findings)
    predicted = [["normal", "pneumonia"].index(r["decision"]) for r in rows]
    cm = json.loads((tmp_path / "out" / "metrics.json").read_text())["confusion_matrix"]
    assert np.bincount(predicted, minlength=2).tolist() == np.array(cm).sum(0).tolist()  # metrics count the same


def test_evaluation_reports_calibration_operating_points_and_uncertainty(checkpoint: Path, tmp_path: Path) -> None:
    from cadx.engine.checkpoint import update_meta
    from cadx.engine.meta import Calibration, OperatingPoint

    before = evaluate(checkpoint, output=tmp_path / "raw", n_bootstrap=20, batch_size=4)
    assert not before["calibration"]["applied"]
    assert before["calibration"]["uncalibrated"]["nll"] == before["calibration"]["calibrated"]["nll"]
    points = (OperatingPoint("balanced", 0.45, "youden", sensitivity=0.5, specificity=0.5, n=6),
              OperatingPoint("high-sensitivity", 0.0, "sensitivity", 0.95, 1.0, 0.0, 6))
    update_meta(checkpoint, calibration=Calibration(temperatures=(4.0,), n=6), operating_points=points,
                default_operating_point="balanced")
    m = evaluate(checkpoint, output=tmp_path / "out", n_bootstrap=20, batch_size=4)
    cal = m["calibration"]
    assert cal["applied"] and cal["temperatures"] == [[4.0]]
    assert cal["uncalibrated"]["nll"] == pytest.approx(before["nll"])  # the network's own output, as before
    for key in ("ece", "brier", "nll"):
        assert m[key] == cal["calibrated"][key] and len(cal["calibrated"]["ci"][key]) == 2
    assert (tmp_path / "out" / "reliability.png").exists() and (tmp_path / "out" / "risk_coverage.png").exists()
    assert sum(m["reliability"]["calibrated"]["count"]) == 6
    names = [p["name"] for p in m["operating_points"]]
    assert names == ["balanced", "high-sensitivity"] and m["operating_points"][1]["sensitivity"] == 1.0
    assert m["operating_point"] == "balanced"
    u = m["uncertainty"]
    assert u["flagged"]["n"] + u["unflagged"]["n"] == u["n_assessed"] == 6 and u["flip_check"]
    rc = m["risk_coverage"]
    assert rc["coverage"][-1] == 1.0 and rc["risk"][-1] == pytest.approx(1 - m["accuracy"])
    assert rc["optimal_aurc"] <= rc["aurc"]
    sensitive = evaluate(checkpoint, output=tmp_path / "hs", n_bootstrap=10, batch_size=4,
                         operating_point="high-sensitivity")
    assert sensitive["threshold"] == 0.0 and sensitive["recall"] == 1.0
    assert sensitive["operating_point"] == "high-sensitivity" and "## Operating points" in (
        tmp_path / "hs" / "report.md").read_text()


def test_split_selection(checkpoint: Path) -> None:
    ckpt = load_checkpoint(checkpoint)
    _, test = select_records(ckpt, None, "test")
    assert len(test) == 6
    _, every = select_records(ckpt, None, "all")
    assert len(every) == 12
    with pytest.raises(DatasetError, match="unknown split"):
        select_records(ckpt, None, "holdout")
    with pytest.raises(DatasetError, match="is empty"):
        select_records(ckpt, None, "val")
