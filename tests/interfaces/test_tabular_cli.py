"""``cadx tabular`` end to end on a synthetic CSV, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cadx.interfaces.cli import app
from tests.engine.test_tabular import write_synthetic_csv

runner = CliRunner()


@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_csv(tmp_path_factory.mktemp("tabular_cli") / "synthetic.csv", n=160)


def test_tabular_writes_metrics_and_roc(synthetic_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["tabular", str(synthetic_csv), "--target", "outcome", "--drop", "leak",
                                 "--folds", "3", "--epochs", "40", "--bootstrap", "30", "--output", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("cnn1d", "logistic", "gbm"):
        assert set(metrics[name]) >= {"auc", "auc_ci", "auc_sd", "fold_auc", "sensitivity", "specificity"}
        assert len(metrics[name]["auc_ci"]) == 2 and len(metrics[name]["fold_auc"]) == 3
    assert metrics["data"]["dropped"] == ["leak"] and metrics["cv"]["folds"] == 3
    assert (out / "roc.png").stat().st_size > 1000 and (out / "report.md").exists()
    assert "cnn1d" in result.output and "results in" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "nope"], "target column 'nope' not found; columns: age, marker"),
    (["--target", "outcome", "--drop", "time"], "--drop column 'time' not found"),
    (["--target", "site"], "must be binary"),
    (["--target", "outcome", "--folds", "100"], "too few rows per class"),
])
def test_tabular_bad_input_is_one_line(synthetic_csv: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["tabular", str(synthetic_csv), *args, "--output", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "synthetic.csv" in lines[0]
    assert message in lines[0]
    assert not (tmp_path / "x").exists()


def test_tabular_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["tabular", str(tmp_path / "absent.csv"), "--target", "y"])
    assert result.exit_code == 2
    assert "absent.csv: no such file" in result.output
