"""cadx tabular engine: loading and validation, leak-free CV of the 1-D CNN / logistic / GBM, the network itself."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from cadx.engine.tabular import MODELS, CVResult, load_table, run_cv, write_outputs
from cadx.models.tabular import TabularCNN1d

GBSG = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "tabular" / "gbsg2.csv"
HEADER = ["age", "marker", "noise1", "site", "noise2", "grade", "leak", "outcome"]


def write_synthetic_csv(path: Path, n: int = 240, seed: int = 0) -> Path:
    """Outcome depends on two numeric columns plus noise; a 3-level string column, a I/II/III column, a leak."""
    rng = np.random.default_rng(seed)
    age, marker = rng.normal(60, 10, n), rng.normal(0, 1, n)
    logit = 0.15 * (age - 60) - 1.5 * marker + rng.normal(0, 0.7, n)
    y = (logit > 0).astype(int)
    site = rng.choice(["north", "south", "east"], n)
    grade = rng.choice(["I", "II", "III"], n)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for i in range(n):
            writer.writerow([f"{age[i]:.1f}", f"{marker[i]:.3f}", f"{rng.normal():.3f}", site[i],
                             f"{rng.normal():.3f}", grade[i], y[i] * 100 + rng.integers(0, 5), y[i]])
    return path


@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_csv(tmp_path_factory.mktemp("tabular") / "synthetic.csv")


@pytest.fixture(scope="module")
def cv_result(synthetic_csv: Path) -> CVResult:
    data = load_table(synthetic_csv, "outcome", ["leak"])
    return run_cv(data, folds=4, seed=0, epochs=60, n_bootstrap=50)


def test_load_table_types_and_encodings(synthetic_csv: Path) -> None:
    data = load_table(synthetic_csv, "outcome", ["leak"])
    assert data.columns == ["age", "marker", "noise1", "site", "noise2", "grade"]
    assert data.encoding["site"] == "one-hot, 3 levels"
    assert data.encoding["grade"] == "ordinal (I<II<III)"
    assert data.encoding["age"] == "numeric"
    assert set(data.y) == {0, 1} and data.positive_class == "1"


def test_cv_all_models_learn_the_easy_task(cv_result: CVResult) -> None:
    m = cv_result.metrics
    for name in MODELS:
        r = m[name]
        assert r["auc"] > 0.7, (name, r["fold_auc"])
        assert len(r["fold_auc"]) == 4 and len(r["folds"]) == 4
        low, high = r["auc_ci"]
        assert 0 <= low <= r["auc_pooled"] <= high <= 1
        assert 0 <= r["sensitivity"] <= 1 and 0 <= r["specificity"] <= 1
        assert all(0 <= f["threshold"] <= 1 for f in r["folds"])
    assert m["data"]["n_encoded_features"] == 8  # 4 numeric + site (3 one-hot) + grade (1 ordinal)
    assert all(f["best_epoch"] >= 1 for f in m["cnn1d"]["folds"])


def test_folds_never_leak(cv_result: CVResult) -> None:
    """Outer test folds partition the rows; the scaler of each fold saw its inner-training rows and nothing else."""
    n = len(cv_result.y)
    tests = np.concatenate([f["test"] for f in cv_result.folds])
    assert sorted(tests.tolist()) == list(range(n))
    data_age = np.array([float(v) for v in load_table(Path(cv_result.metrics["data"]["file"]), "outcome",
                                                      ["leak"]).x[:, 0]])
    for fold in cv_result.folds:
        inner, val, test = (set(fold[k].tolist()) for k in ("inner", "val", "test"))
        assert not inner & test and not val & test and not inner & val
        scaler = fold["preprocessor"].named_steps["scale"]
        assert scaler.n_samples_seen_ == len(inner)
        assert scaler.mean_[0] == pytest.approx(data_age[fold["inner"]].mean())  # column 0 is age
        assert scaler.mean_[0] != pytest.approx(data_age.mean(), abs=1e-9)


def test_cv_is_seeded(synthetic_csv: Path, cv_result: CVResult) -> None:
    again = run_cv(load_table(synthetic_csv, "outcome", ["leak"]), folds=4, seed=0, epochs=60, n_bootstrap=50)
    for name in MODELS:
        assert again.metrics[name]["fold_auc"] == pytest.approx(cv_result.metrics[name]["fold_auc"])


def test_write_outputs(cv_result: CVResult, tmp_path: Path) -> None:
    write_outputs(cv_result, tmp_path)
    assert {"metrics.json", "report.md", "roc.png"} <= {p.name for p in tmp_path.iterdir()}
    report = (tmp_path / "report.md").read_text()
    assert all(f"| {name} |" in report for name in MODELS)


@pytest.mark.parametrize(("target", "drop", "message"), [
    ("missing", [], "target column 'missing' not found; columns: age, marker"),
    ("outcome", ["nope"], "--drop column 'nope' not found; columns: age"),
    ("site", ["leak"], "must be binary, found 3 distinct value(s)"),
    ("outcome", ["outcome"], "cannot --drop the target"),
])
def test_load_table_errors(synthetic_csv: Path, target: str, drop: list[str], message: str) -> None:
    with pytest.raises(ValueError, match="synthetic.csv") as exc:
        load_table(synthetic_csv, target, drop)
    assert message in str(exc.value)


def test_missing_file_and_missing_values(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.csv: no such file"):
        load_table(tmp_path / "absent.csv", "y")
    bad = tmp_path / "holes.csv"
    bad.write_text("a,b,y\n1,,0\n2,3,1\n")
    with pytest.raises(ValueError, match=r"holes.csv: missing values in column\(s\) b"):
        load_table(bad, "y")


def test_too_few_rows_per_class(tmp_path: Path) -> None:
    small = tmp_path / "small.csv"
    rows = [f"{i},{i % 3},{i % 5},{i % 7},{int(i < 6)}" for i in range(40)]
    small.write_text("a,b,c,d,y\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"small.csv: too few rows per class .* 34 / 6, need at least 10"):
        run_cv(load_table(small, "y"), folds=5)


def test_cnn1d_shapes() -> None:
    net = TabularCNN1d(8)
    assert net(torch.zeros(5, 8)).shape == (5,)
    assert net.head[1].in_features == 32 * 3  # (8 - 3 + 1) // 2 positions after the pool
    with pytest.raises(ValueError, match="at least 4 feature columns"):
        TabularCNN1d(3)


@pytest.mark.slow
def test_gbsg_sanity() -> None:
    """The real GBSG file, 5 folds: every model in a plausible band (sanity, not tuning)."""
    if not GBSG.is_file():
        pytest.skip(f"real data file {GBSG} is absent")
    result = run_cv(load_table(GBSG, "cens", ["time"]), folds=5, seed=0, n_bootstrap=200)
    assert result.metrics["data"]["rows"] == 686 and result.metrics["data"]["positives"] == 299
    for name in MODELS:
        assert 0.6 < result.metrics[name]["auc"] < 0.85, (name, result.metrics[name]["fold_auc"])
