"""One decision per image: ``cadx predict``, ``cadx evaluate``, ``cadx explain`` and the server assert the same
finding for the same image and threshold (the decision is computed by ``cadx.engine.decision`` once per image)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from cadx.engine.inference import Predictor
from cadx.interfaces.cli import app
from tests.conftest import make_class_folders
from tests.server.conftest import Env

runner = CliRunner()


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_predict_evaluate_explain_and_server_agree(sqlite_env: Env, models_dir: Path, tmp_path: Path) -> None:
    checkpoint = models_dir / "chest_xray_tiny" / "model.ckpt"
    data = make_class_folders(tmp_path / "images", n_per_class=6, size=40, seed=7)
    files = sorted(data.rglob("*.png"))
    predictor = Predictor.from_checkpoint(checkpoint)
    p_positive = [float(predictor.predict_batch(predictor.prepare(predictor.read(f))[None])[0][1]) for f in files]
    # A threshold that is neither the model's nor 0.5, between the images' probabilities: both findings occur.
    threshold = float(np.median(p_positive))
    expected = {f.name: "pneumonia" if p >= threshold else "normal" for f, p in zip(files, p_positive, strict=True)}
    assert set(expected.values()) == {"normal", "pneumonia"}
    t = f"{threshold:.17g}"  # the exact float, so no image sits on the other side of a rounded threshold

    out = tmp_path / "predict.csv"
    result = runner.invoke(app, ["predict", str(checkpoint), *map(str, files), "--threshold", t, "--output", str(out)])
    assert result.exit_code == 0, result.output
    predicted = {Path(r["file"]).name: r["prediction"] for r in rows(out)}

    result = runner.invoke(app, ["evaluate", str(checkpoint), "--data", str(data), "--split", "all", "--threshold", t,
                                 "--output", str(tmp_path / "eval"), "--bootstrap", "10", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    evaluated = {Path(r["file"]).name: r["decision"] for r in rows(tmp_path / "eval" / "predictions.csv")}

    result = runner.invoke(app, ["explain", str(checkpoint), *map(str, files), "--threshold", t, "--output",
                                 str(tmp_path / "explain"), "--feature-maps", "0"])
    assert result.exit_code == 0, result.output
    explained = rows(tmp_path / "explain" / "explanations.csv")
    assert all(r["explained_class"] == r["prediction"] for r in explained)  # the heatmap shows the finding
    explained_decisions = {Path(r["file"]).name: r["prediction"] for r in explained}

    response = sqlite_env.client.post(
        "/api/v1/studies", headers=sqlite_env.auth(), data={"model_id": "chest_xray_tiny", "threshold": t},
        files=[("files", (f.name, f.read_bytes(), "image/png")) for f in files])
    assert response.status_code == 201, response.text
    served = {r["filename"]: r["decision"] for r in response.json()["results"]}
    assert all(r["explained_class"] == r["decision"] for r in response.json()["results"])

    assert predicted == evaluated == explained_decisions == served == expected
