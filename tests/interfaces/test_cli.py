"""End to end through the command line: train, evaluate, predict on small synthetic data."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cadx.data.transforms import Preprocessing, to_model_input
from cadx.engine.checkpoint import export_checkpoint, read_meta
from cadx.engine.meta import FORMAT_VERSION
from cadx.interfaces.cli import app
from cadx.models.weights import IMAGENET_MEAN, IMAGENET_STD
from tests.conftest import colour_photo, make_class_folders, make_multilabel_manifest, synthetic_image, write_dicom

runner = CliRunner()
METRIC_KEYS = {"accuracy", "precision", "recall", "specificity", "f1", "auc", "per_class", "confusion_matrix", "ci",
               "params", "latency_ms", "n_images", "classes"}


def invoke(*args: str):
    """The CLI; ``train`` runs once (``--folds 1``) unless a test asks for folds: these tests are about one run."""
    if args and args[0] == "train" and "--folds" not in args:
        args = (*args, "--folds", "1")
    result = runner.invoke(app, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("e2e")
    data = make_class_folders(base / "data", 40)
    (data / "normal" / "notes.txt").write_text("not an image")
    run = base / "run"
    result = invoke("train", data, "--model", "simple_cnn", "--epochs", "2", "--image-size", "32",
                    "--batch-size", "16", "--output", run, "--seed", "1")
    assert result.exit_code == 0, result.output
    return data, run


def test_train_writes_a_self_describing_run(trained) -> None:
    _, run = trained
    for name in ("best.ckpt", "last.ckpt", "config.yaml", "metrics.csv", "curves.png", "split.csv", "summary.json"):
        assert (run / name).exists(), name
    summary = json.loads((run / "summary.json").read_text())
    assert [s["file"].endswith("notes.txt") for s in summary["skipped_files"]] == [True]
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    stored = torch.load(run / "best.ckpt", map_location="cpu", weights_only=False)["cadx"]
    assert stored["format"] == FORMAT_VERSION  # written in the current format, read back through CheckpointMeta
    meta = read_meta(run / "best.ckpt")
    assert meta.classes == ("normal", "pneumonia") and meta.model.name == "simple_cnn"
    assert meta.preprocessing.image_size == 32 and set(meta.split) == {"train", "val", "test"}
    assert 0.0 <= meta.decision_threshold <= 1.0 and meta.threshold_source.startswith("validation")
    assert meta.provenance.cadx_version and meta.provenance.data_hash.startswith("sha256:")


def test_same_seed_trains_the_same_model(trained, tmp_path: Path) -> None:
    """Augmentation included (MONAI transforms have their own generator), a run can be repeated exactly."""
    data, run = trained
    again = tmp_path / "again"
    result = invoke("train", data, "--model", "simple_cnn", "--epochs", "2", "--image-size", "32",
                    "--batch-size", "16", "--output", again, "--seed", "1")
    assert result.exit_code == 0, result.output

    def losses(folder: Path) -> list[tuple[str, ...]]:  # the timing columns differ from run to run
        return [tuple(row.split(",")[:6]) for row in (folder / "metrics.csv").read_text().splitlines()]

    assert losses(again) == losses(run)
    first, second = (torch.load(r / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
                     for r in (run, again))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_evaluate_writes_metrics_and_plots(trained, tmp_path: Path) -> None:
    _, run = trained
    out = tmp_path / "eval"
    result = invoke("evaluate", run, "--output", out, "--bootstrap", "100")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= METRIC_KEYS
    assert metrics["split"] == "test" and metrics["n_images"] > 0
    assert set(metrics["latency_ms"]) >= {"batch_1", "batch_64", "device"}
    for name in ("report.md", "confusion_matrix.png", "confusion_matrix.csv", "roc.png", "predictions.csv"):
        assert (out / name).exists(), name
    assert "AUC-ROC" in (out / "report.md").read_text()
    assert metrics["abstention"]["n"] == 0 and metrics["abstention"]["rate"] == 0.0  # no fitted score, clean images
    assert metrics["assessed_only"]["n_images"] == metrics["n_images"]
    assert [row["coverage"] for row in metrics["selective"]][:2] == [1.0, 0.95]
    assert metrics["selective"][0]["accuracy"] == pytest.approx(metrics["accuracy"])


def test_evaluate_on_other_data_with_split_all(trained, tmp_path: Path) -> None:
    _, run = trained
    other = make_class_folders(tmp_path / "other", 10, seed=5)
    result = invoke("evaluate", run, "--data", other, "--split", "all", "--output", tmp_path / "o", "--bootstrap", "50")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["n_images"] == 20
    result = invoke("evaluate", run, "--data", other, "--split", "test")
    assert result.exit_code == 2 and "--split all" in result.output


def _probability_columns(path: Path) -> np.ndarray:
    """The p_<class> columns of an evaluation's predictions.csv, found by their names."""
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    names = [k for k in rows[0] if k.startswith("p_")]
    return np.array([[float(r[k]) for k in names] for r in rows])


def test_evaluate_an_ensemble_with_tta(trained, tmp_path: Path) -> None:
    data, run = trained
    twin, stranger = tmp_path / "twin", tmp_path / "stranger"
    common = ["--model", "simple_cnn", "--epochs", "1", "--image-size", "32", "--batch-size", "16"]
    assert invoke("train", data, *common, "--output", twin, "--seed", "2", "--split-seed", "1").exit_code == 0
    assert invoke("train", data, *common, "--output", stranger, "--seed", "3").exit_code == 0
    single = {}
    for r in (run, twin):
        assert invoke("evaluate", r, "--output", tmp_path / f"e_{r.name}", "--bootstrap", "20").exit_code == 0
        single[r.name] = _probability_columns(tmp_path / f"e_{r.name}" / "predictions.csv")
    result = invoke("evaluate", run, twin, "--output", tmp_path / "ens", "--bootstrap", "20")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    assert metrics["ensemble"]["threshold_source"] == "validation (Youden's J) of the averaged output, at evaluation"
    assert len(metrics["ensemble"]["checkpoints"]) == 2 and metrics["ensemble"]["tta"] is None
    probs = _probability_columns(tmp_path / "ens" / "predictions.csv")
    assert np.allclose(probs, (single["run"] + single["twin"]) / 2, atol=2e-6)
    result = invoke("evaluate", run, "--tta", "--output", tmp_path / "tta", "--bootstrap", "20")
    assert result.exit_code == 0 and "TTA flip" in result.output
    assert json.loads((tmp_path / "tta" / "metrics.json").read_text())["ensemble"]["tta"] == "flip"
    result = invoke("evaluate", run, stranger)
    assert result.exit_code == 2 and "split differs" in result.output


def test_predict_mixed_inputs_reports_bad_files(trained, tmp_path: Path) -> None:
    data, run = trained
    dcm = tmp_path / "scan.dcm"
    write_dicom(dcm, synthetic_image(1, np.random.default_rng(0), 48).astype(np.uint16) * 16)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "pred.csv"
    result = invoke("predict", run, data / "pneumonia", dcm, bad, "--output", out, "--threshold", "0.5")
    assert result.exit_code == 0, result.output
    lines = out.read_text().strip().splitlines()
    assert lines[0] == ("file,prediction,probability,threshold,operating_point,assessed,reason,uncertain,"
                        "uncertain_reason,p_normal,p_pneumonia,error,backend")
    assert len(lines) == 1 + 40 + 2
    bad_row = next(row for row in csv.DictReader(lines) if "bad.png" in row["file"])
    assert bad_row["prediction"] == "" and "PNG" in bad_row["error"]
    json_out = tmp_path / "pred.json"
    assert invoke("predict", run, dcm, "--output", json_out).exit_code == 0
    row = json.loads(json_out.read_text())[0]
    assert row["prediction"] in ("normal", "pneumonia")
    assert row["p_normal"] + row["p_pneumonia"] == pytest.approx(1.0, abs=1e-5)
    only_bad = invoke("predict", run, bad)
    assert only_bad.exit_code == 1


def test_calibrate_then_predict_and_evaluate_at_a_named_operating_point(trained, tmp_path: Path) -> None:
    """cadx calibrate writes a temperature and three operating points into the checkpoint; predict and evaluate
    decide at the one named, say so, and flag uncertain answers; evaluate reports ECE/Brier/NLL before and after."""
    import shutil

    data, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = invoke("calibrate", copy, "--data", data, "--split", "all", "--target-sensitivity", "0.9")
    assert result.exit_code == 0, result.output
    assert "calibrated on 80" in " ".join(result.output.split())
    meta = read_meta(copy / "best.ckpt")
    assert meta.calibration is not None and len(meta.calibration.temperatures) == 1
    assert [p.name for p in meta.operating_points] == ["balanced", "high-sensitivity", "high-specificity"]
    assert meta.operating_point("high-sensitivity").target == 0.9 and meta.default_operating_point == "balanced"
    assert meta.decision_threshold == meta.operating_point("balanced").threshold
    out = tmp_path / "pred.json"
    result = invoke("predict", copy, data / "pneumonia", "--output", out, "--operating-point", "high-sensitivity")
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    sensitive = meta.operating_point("high-sensitivity").threshold
    assert all(r["operating_point"] == "high-sensitivity" and r["threshold"] == pytest.approx(sensitive)
               for r in rows)
    for r in rows:
        near = abs(r["p_pneumonia"] - sensitive) < 0.1
        assert r["uncertain"] == bool(r["uncertain_reason"]) and (not near or r["uncertain"])
    custom = json.loads((invoke("predict", copy, data / "pneumonia", "--output", out, "--threshold", "0.5",
                                "--no-flip-check"), out.read_text())[1])
    assert all(r["operating_point"] == "custom" for r in custom)
    assert "unknown operating point" in invoke("predict", copy, data / "pneumonia", "--operating-point", "x").output
    result = invoke("evaluate", copy, "--output", tmp_path / "eval", "--bootstrap", "20",
                    "--operating-point", "high-specificity")
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["operating_point"] == "high-specificity"
    assert m["threshold"] == pytest.approx(meta.operating_point("high-specificity").threshold)
    assert m["calibration"]["applied"] and {"ece", "brier", "nll"} <= set(m["calibration"]["uncalibrated"]["ci"])
    assert [p["name"] for p in m["operating_points"]] == ["balanced", "high-sensitivity", "high-specificity"]
    assert {"flagged", "unflagged", "share_of_errors_flagged"} <= set(m["uncertainty"])
    assert m["risk_coverage"]["aurc"] is not None
    for name in ("reliability.png", "risk_coverage.png"):
        assert (tmp_path / "eval" / name).exists()
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "## Calibration" in report and "## Uncertain" in report and "**high-specificity** (decides)" in report


def test_predict_names_why_an_image_is_not_assessed(trained, tmp_path: Path) -> None:
    """A blank, a thumbnail and a strip among ordinary images: each gets no prediction and its reason; the others
    are assessed; the exit code stays 0."""
    data, run = trained
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in sorted((data / "pneumonia").glob("*.png"))[:3]:
        (folder / f.name).write_bytes(f.read_bytes())
    rng = np.random.default_rng(0)
    Image.fromarray(np.full((256, 256), 128, np.uint8)).save(folder / "blank.png")
    Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(folder / "tiny.png")
    Image.fromarray(rng.integers(0, 256, (20, 400), dtype=np.uint8)).save(folder / "strip.png")
    out = tmp_path / "pred.json"
    result = invoke("predict", run, folder, "--output", out)
    assert result.exit_code == 0, result.output
    rows = {Path(r["file"]).name: r for r in json.loads(out.read_text())}
    expected = {"blank.png": "blank", "tiny.png": "too small", "strip.png": "aspect ratio"}
    for name, reason in expected.items():
        assert rows[name]["assessed"] is False and rows[name]["prediction"] is None and reason in rows[name]["reason"]
        assert rows[name]["probability"] is None
    assessed = [r for name, r in rows.items() if name not in expected]
    assert len(assessed) == 3 and all(r["assessed"] and r["prediction"] and r["reason"] == "" for r in assessed)
    assert "not assessed: blank" in " ".join(result.output.split())


def test_predict_probability_is_the_decided_class(trained, tmp_path: Path) -> None:
    """Above-0.5 pneumonia below a stricter threshold is decided normal; the probability column must be normal's."""
    data, run = trained
    out = tmp_path / "pred.json"
    assert invoke("predict", run, data / "pneumonia", "--output", out, "--threshold", "0.5").exit_code == 0
    p = max(r["p_pneumonia"] for r in json.loads(out.read_text()) if r["p_pneumonia"] < 1.0)
    assert p > 0.5, "the fixture model should call some pneumonia image pneumonia without saturating"
    assert invoke("predict", run, data / "pneumonia", "--output", out, "--threshold", str((p + 1) / 2)).exit_code == 0
    rows = json.loads(out.read_text())
    assert any(r["prediction"] == "normal" and r["p_pneumonia"] > 0.5 for r in rows)
    assert all(r["probability"] == r[f"p_{r['prediction']}"] for r in rows)


def test_predict_does_not_assess_a_dicom_outside_the_models_scope(trained, tmp_path: Path) -> None:
    """A chest X-ray model would still classify a brain MRI; the DICOM header says it is one, so no finding is
    given for it: it is not assessed, with the header's words as the reason."""
    _, run = trained
    model = tmp_path / "chest" / "model.ckpt"
    assert invoke("export", run, "--output", model, "--category", "Chest X-ray").exit_code == 0
    pixels = synthetic_image(1, np.random.default_rng(0), 48).astype(np.uint16) * 16
    files = {"mri.dcm": ("MR", "HEAD"), "chest.dcm": ("DX", "CHEST"), "no_body_part.dcm": ("CR", None)}
    for name, (modality, body_part) in files.items():
        write_dicom(tmp_path / name, pixels, modality=modality, body_part=body_part)
    Image.fromarray(colour_photo()).save(tmp_path / "photo.png")
    out = tmp_path / "pred.csv"
    result = invoke("predict", model, *(tmp_path / name for name in [*files, "photo.png"]), "--output", out)
    assert result.exit_code == 0, result.output
    assert "2 image(s) not assessed" in " ".join(result.output.split())
    rows = {Path(r["file"]).name: r for r in csv.DictReader(out.open())}
    assert rows["mri.dcm"]["prediction"] == "" and rows["mri.dcm"]["assessed"] == "False"
    assert "Modality MR" in rows["mri.dcm"]["reason"] and "body part HEAD" in rows["mri.dcm"]["reason"]
    assert rows["chest.dcm"]["reason"] == rows["no_body_part.dcm"]["reason"] == ""
    assert rows["chest.dcm"]["prediction"] in ("normal", "pneumonia")
    assert "colour image" in rows["photo.png"]["reason"]  # a PNG has no header, but its colour gives it away
    plain = invoke("predict", run, tmp_path / "mri.dcm")  # a run without a category: nothing to check against
    assert plain.exit_code == 0 and "outside" not in plain.output


def test_resume_continues_and_overwrite_guard(trained, tmp_path: Path) -> None:
    data, run = trained
    again = invoke("train", data, "--model", "simple_cnn", "--epochs", "1", "--image-size", "32", "--output", run)
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = invoke("train", data, "--model", "simple_cnn", "--epochs", "3", "--image-size", "32",
                     "--batch-size", "16", "--output", run, "--seed", "1", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 4  # 2 + 1 more epoch
    epochs = [float(line.split(",")[-1]) for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    summary = json.loads((run / "summary.json").read_text())  # training time counts the first session's epochs
    assert summary["earlier_sessions_seconds"] == round(sum(epochs[:2]), 1)
    assert summary["train_seconds"] >= sum(epochs) - 0.1


def test_resume_starts_after_the_last_epoch_not_the_best(tmp_path: Path) -> None:
    """With a learning rate of 0 validation loss never improves after epoch 1: last.ckpt must still follow every
    epoch, or --resume would re-run epochs and log them twice."""
    data = make_class_folders(tmp_path / "d", 10)
    args = ("train", data, "--model", "simple_cnn", "--image-size", "32", "--lr", "0", "--output", tmp_path / "r")
    assert invoke(*args, "--epochs", "2").exit_code == 0
    saved = {name: torch.load(tmp_path / "r" / f"{name}.ckpt", map_location="cpu", weights_only=False)["epoch"]
             for name in ("best", "last")}
    assert saved == {"best": 0, "last": 1}
    assert invoke(*args, "--epochs", "3", "--resume").exit_code == 0
    epochs = [line.split(",")[0] for line in (tmp_path / "r" / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3"]


def test_time_budget_never_cuts_an_epoch(tmp_path: Path) -> None:
    """A budget spent after the first batch still ends on a whole, validated epoch: a cut epoch would be logged as a
    whole one, and --resume would continue inside it."""
    data = make_class_folders(tmp_path / "d", 10)
    result = invoke("train", data, "--model", "simple_cnn", "--image-size", "32", "--batch-size", "2",
                    "--epochs", "3", "--max-minutes", "0.00001", "--output", tmp_path / "r")
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "r" / "metrics.csv").read_text().splitlines()[1:]
    last = torch.load(tmp_path / "r" / "last.ckpt", map_location="cpu", weights_only=False)
    train_images = sum(1 for line in (tmp_path / "r" / "split.csv").read_text().splitlines() if line.endswith(",train"))
    assert len(rows) == 1 and last["epoch"] == 0
    assert last["global_step"] == train_images // 2 > 1  # every batch of the epoch ran (the last partial one dropped)


def test_npz_and_multilabel_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    images = np.stack([synthetic_image(int(v), rng, 28) for v in labels])
    npz = tmp_path / "mini.npz"
    np.savez(npz, train_images=images[:40], train_labels=labels[:40, None], val_images=images[40:50],
             val_labels=labels[40:50, None], test_images=images[50:], test_labels=labels[50:, None])
    result = invoke("train", npz, "--recipe", "small-cnn", "--epochs", "1", "--class-names", "normal,pneumonia",
                    "--output", tmp_path / "npz")
    assert result.exit_code == 0, result.output
    assert invoke("evaluate", tmp_path / "npz", "--bootstrap", "20").exit_code == 0
    assert json.loads((tmp_path / "npz" / "metrics.json").read_text())["n_images"] == 10

    manifest = make_multilabel_manifest(tmp_path)
    result = invoke("train", manifest, "--model", "small_cnn", "--image-size", "28", "--epochs", "1",
                    "--output", tmp_path / "ml", "--patient-pattern", "")
    assert result.exit_code == 0, result.output
    assert invoke("evaluate", tmp_path / "ml", "--bootstrap", "20").exit_code == 0
    metrics = json.loads((tmp_path / "ml" / "metrics.json").read_text())
    assert set(metrics["per_class"]) == {"effusion", "mass", "nodule"}


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    result = invoke("train", tmp_path / "missing", "--output", tmp_path / "r")
    assert result.exit_code == 2 and "no such file" in result.output and "Traceback" not in result.output
    one_class = make_class_folders(tmp_path / "one", 4, classes=("only",))
    result = invoke("train", one_class, "--output", tmp_path / "r")
    assert result.exit_code == 2 and "at least 2" in result.output
    result = invoke("evaluate", tmp_path / "nothing.ckpt")
    assert result.exit_code == 2 and "no such checkpoint" in result.output
    result = invoke("train", one_class, "--model", "nope", "--output", tmp_path / "r")
    assert result.exit_code == 2


def test_models_and_help() -> None:
    result = invoke("models")
    assert result.exit_code == 0 and "aernet" in result.output and "densenet121" in result.output
    for command in ("train", "evaluate", "predict", "models"):
        assert invoke(command, "--help").exit_code == 0


def test_transfer_learning_from_a_local_state_dict(tmp_path: Path) -> None:
    from cadx.engine.checkpoint import load_checkpoint
    from cadx.models import create_model

    source = create_model("resnet18", in_channels=3, num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "imagenet.pth")
    data = make_class_folders(tmp_path / "d", 10)
    result = invoke("train", data, "--model", "resnet18", "--weights", tmp_path / "imagenet.pth", "--freeze-backbone",
                    "--in-channels", "1", "--image-size", "32", "--epochs", "1", "--output", tmp_path / "run")
    assert result.exit_code == 0, result.output
    model = load_checkpoint(tmp_path / "run").model
    expected = source.conv1.weight.sum(1, keepdim=True)
    assert torch.allclose(model.conv1.weight, expected, atol=1e-6)  # frozen backbone kept the summed weights
    grey_imagenet = (float(np.mean(IMAGENET_MEAN)), float(np.mean(IMAGENET_STD)))
    assert (read_meta(tmp_path / "run").preprocessing.mean[0], read_meta(tmp_path / "run").preprocessing.std[0]) \
        == pytest.approx(grey_imagenet)  # the weights' normalisation, not cadx's 0.5 / 0.25
    bad = tmp_path / "bad.pth"
    torch.save({"something.else": torch.zeros(3)}, bad)
    result = invoke("train", data, "--model", "resnet18", "--weights", bad, "--image-size", "32", "--epochs", "1",
                    "--output", tmp_path / "run2")
    assert result.exit_code == 2 and "missing" in result.output.lower()


def test_weights_keep_their_normalisation_through_training_and_prediction(trained, tmp_path: Path) -> None:
    """Fine-tuned from ImageNet weights with three input channels, a model normalises each channel as ImageNet did;
    fine-tuned from a cadx checkpoint, as that checkpoint did. The prediction uses the same numbers."""
    from cadx.engine.inference import Predictor
    from cadx.models import create_model

    data, run = trained
    torch.save(create_model("simple_cnn", in_channels=3, num_classes=5).state_dict(), tmp_path / "rgb.pth")
    common = ["--model", "simple_cnn", "--image-size", "32", "--epochs", "1", "--batch-size", "16"]
    assert invoke("train", data, *common, "--in-channels", "3", "--weights", tmp_path / "rgb.pth", "--output",
                  tmp_path / "rgb").exit_code == 0
    pre = Predictor.from_checkpoint(tmp_path / "rgb").pre
    assert pre.mean == pytest.approx(IMAGENET_MEAN) and pre.std == pytest.approx(IMAGENET_STD)
    x = np.full((1, 3, 32, 32), 128, dtype=np.uint8)
    normalised = to_model_input(torch.as_tensor(x), pre)[0, :, 0, 0].numpy()
    assert normalised == pytest.approx((128 / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD), rel=1e-5)
    own = tmp_path / "own.ckpt"
    export_checkpoint(run, own, preprocessing=Preprocessing(32, 1, mean=(0.4,), std=(0.3,)))  # a non-default pair
    assert invoke("train", data, *common, "--weights", own, "--output", tmp_path / "own").exit_code == 0
    trained_from = read_meta(tmp_path / "own").preprocessing
    assert (trained_from.mean, trained_from.std) == ((0.4,), (0.3,))


def test_export_makes_a_compact_checkpoint_that_predicts_the_same(trained, tmp_path: Path) -> None:
    from cadx.engine.inference import Predictor

    data, run = trained
    out = tmp_path / "models" / "demo" / "model.ckpt"
    result = invoke("export", run, "--output", out, "--category", "Chest X-ray")
    assert result.exit_code == 0, result.output
    assert out.stat().st_size < (run / "best.ckpt").stat().st_size
    shipped, original = Predictor.from_checkpoint(out), Predictor.from_checkpoint(run)
    assert shipped.meta.category == "Chest X-ray"
    image = shipped.prepare(shipped.read(next((data / "pneumonia").glob("*.png"))))[None]
    assert np.allclose(shipped.predict_batch(image), original.predict_batch(image), atol=2e-3)


def test_a_shipped_model_is_found_by_name(trained, tmp_path: Path, monkeypatch) -> None:
    data, run = trained
    assert invoke("export", run, "--output", tmp_path / "models" / "demo" / "model.ckpt").exit_code == 0
    monkeypatch.setenv("CADX_MODELS_DIR", str(tmp_path / "models"))
    result = invoke("predict", "demo", next((data / "normal").glob("*.png")))
    assert result.exit_code == 0, result.output
    assert invoke("predict", "nonexistent", next((data / "normal").glob("*.png"))).exit_code == 2
    assert invoke("predict", "demo").exit_code == 2  # a model but nothing to classify


def test_predict_without_a_model_uses_the_shipped_default(trained, tmp_path: Path, monkeypatch) -> None:
    data, run = trained
    assert invoke("export", run, "--output", tmp_path / "models" / "chest_xray_pneumonia" / "model.ckpt").exit_code == 0
    monkeypatch.setenv("CADX_MODELS_DIR", str(tmp_path / "models"))
    out = tmp_path / "p.json"
    result = invoke("predict", data / "normal", next((data / "pneumonia").glob("*.png")), "--output", out)
    assert result.exit_code == 0, result.output
    assert "shipped chest_xray_pneumonia" in result.output
    assert len(json.loads(out.read_text())) == len(list((data / "normal").glob("*.png"))) + 1


def test_export_onnx_then_predict_and_evaluate_on_it(trained, tmp_path: Path) -> None:
    data, run = trained
    out = tmp_path / "models" / "demo" / "model.ckpt"
    result = invoke("export", run, "--output", out, "--onnx")
    assert result.exit_code == 0, result.output
    assert "verified" in result.output and (out.parent / "model.verification.json").is_file()
    images = data / "pneumonia"
    answers = {}
    for backend in ("torch", "onnx", "auto"):
        rows_file = tmp_path / f"{backend}.json"
        result = invoke("predict", out, images, "--backend", backend, "--output", rows_file)
        assert result.exit_code == 0, result.output
        rows = json.loads(rows_file.read_text())
        want = "onnx" if backend == "auto" else backend
        assert {r["backend"] for r in rows} == {want} and f"backend {want}" in result.output
        answers[backend] = np.array([r["p_pneumonia"] for r in rows])
    np.testing.assert_allclose(answers["onnx"], answers["torch"], atol=1e-4)
    result = invoke("predict", out, images, "--backend", "onnx-int8")
    assert result.exit_code == 2 and "no verified model.int8.onnx" in result.output
    result = invoke("evaluate", out, "--backend", "onnx", "--output", tmp_path / "ev", "--bootstrap", "20")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["backend"] == "onnx"
    result = invoke("export", run, "--int8")
    assert result.exit_code == 2 and "--int8 and --calibration-data need --onnx" in result.output


def _flat(result) -> str:
    """The output with Rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_predict_streams_rows_and_resumes_where_it_stopped(trained, tmp_path: Path) -> None:
    """Decode workers give the same rows as decoding in process; an interrupted run (its last row cut off) is
    resumed: the files already written are skipped, the cut-off one done again, and every file appears once."""
    data, run = trained
    images = [data / "pneumonia", data / "normal"]
    serial, parallel = tmp_path / "serial.csv", tmp_path / "parallel.jsonl"
    first = invoke("predict", run, *images, "--output", serial, "--workers", "0", "--batch-size", "8")
    assert first.exit_code == 0, first.output
    assert "0 decode worker(s)" in _flat(first) and "80 image(s), 0 unreadable" in _flat(first)
    assert invoke("predict", run, *images, "--output", parallel, "--workers", "2", "--batch-size", "8").exit_code == 0
    rows = list(csv.DictReader(serial.open()))
    streamed = [json.loads(line) for line in parallel.read_text().splitlines()]
    assert [r["file"] for r in rows] == [r["file"] for r in streamed] and len(rows) == 80
    assert [r["prediction"] for r in rows] == [r["prediction"] or "" for r in streamed]
    np.testing.assert_allclose([float(r["p_pneumonia"]) for r in rows], [r["p_pneumonia"] for r in streamed],
                               atol=1e-6)
    # a crash after 30 rows, in the middle of the 31st
    lines = serial.read_text().splitlines(keepends=True)
    serial.write_text("".join(lines[:31]) + lines[31][:7])
    again = invoke("predict", run, *images, "--output", serial, "--resume", "--workers", "0")
    assert again.exit_code == 0, again.output
    assert "50 image(s)" in _flat(again) and "30 already in" in _flat(again)
    resumed = list(csv.DictReader(serial.open()))
    assert sorted(r["file"] for r in resumed) == sorted(r["file"] for r in rows)
    assert {r["file"]: r["prediction"] for r in resumed} == {r["file"]: r["prediction"] for r in rows}
    done = invoke("predict", run, *images, "--output", serial, "--resume")
    assert done.exit_code == 0 and "0 image(s)" in _flat(done) and "80 already in" in _flat(done)
    assert len(list(csv.DictReader(serial.open()))) == 80


def test_predict_refuses_outputs_it_cannot_resume(trained, tmp_path: Path) -> None:
    data, run = trained
    image = next((data / "normal").glob("*.png"))
    assert "--resume needs --output" in _flat(invoke("predict", run, image, "--resume"))
    assert "--resume needs a .csv or .jsonl" in _flat(invoke("predict", run, image, "--output", tmp_path / "a.json",
                                                             "--resume"))
    assert "write results to a .csv, .jsonl or .json" in _flat(invoke("predict", run, image, "--output",
                                                                      tmp_path / "a.txt"))
    other = tmp_path / "other.csv"
    other.write_text("file,prediction,p_cat,p_dog\nx.png,cat,0.9,0.1\n")
    refused = invoke("predict", run, image, "--output", other, "--resume")
    assert refused.exit_code == 2 and "written for other classes" in _flat(refused)
    assert other.read_text().startswith("file,prediction,p_cat")  # left as it was
