"""``cadx explain`` end to end: files per image, DICOM input, bad files skipped, bad layer is one clean line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from typer.testing import CliRunner

from cadx.interfaces.cli import app
from tests.conftest import make_class_folders, synthetic_image, write_dicom

runner = CliRunner()


def invoke(*args: object):
    if args and args[0] == "train":
        args = (*args, "--folds", "1")  # one run, not cross-validation
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("explain")
    data = make_class_folders(base / "data", 12)
    result = invoke("train", data, "--model", "simple_cnn", "--epochs", "1", "--image-size", "32",
                    "--batch-size", "8", "--no-augment", "--output", base / "run")
    assert result.exit_code == 0, result.output
    return base / "run"


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(synthetic_image(1, rng, 40)[:, :30]).save(folder / "wide.png")  # 40 x 30, not square
    pixels = np.repeat(synthetic_image(0, rng, 36).astype(np.uint16) * 16, 2, axis=1)[:, :50]  # 36 x 50, 12 bit
    write_dicom(folder / "scan.dcm", pixels, window=(1500, 2000))
    (folder / "notes.png").write_text("not an image")
    return folder


def test_writes_overlay_heatmap_and_features_per_image(run: Path, inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("explain", run, inputs / "wide.png", inputs / "scan.dcm", "--output", out, "--feature-maps", "4")
    assert result.exit_code == 0, result.output
    for stem, shape in (("wide", (40, 30)), ("scan", (36, 50))):
        for suffix in ("_overlay.png", "_features.png"):
            assert Image.open(out / f"{stem}{suffix}").format == "PNG"
        heat = np.load(out / f"{stem}_heatmap.npy")
        assert heat.shape == shape and heat.dtype == np.float32
        assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert "explained 2 of 2" in result.output


def test_cautions_when_a_dicom_is_outside_the_models_scope(run: Path, inputs: Path, tmp_path: Path) -> None:
    brain = tmp_path / "brain" / "model.ckpt"
    assert invoke("export", run, "--output", brain, "--category", "Brain MRI").exit_code == 0
    result = invoke("explain", brain, inputs / "wide.png", inputs / "scan.dcm", "--output", tmp_path / "out",
                    "--feature-maps", "0")
    assert result.exit_code == 0, result.output
    caution = [line for line in result.output.splitlines() if line.startswith("caution")]
    assert len(caution) == 1 and "scan.dcm" in caution[0] and "Modality CR" in caution[0]  # the PNG has no header
    assert "not assessed" in caution[0]
    rows = {Path(r["file"]).name: r for r in csv.DictReader((tmp_path / "out" / "explanations.csv").open())}
    assert rows["scan.dcm"]["assessed"] == "False" and rows["scan.dcm"]["prediction"] == ""
    assert rows["wide.png"]["assessed"] == "True" and rows["wide.png"]["prediction"]
    assert "explained 2 of 2" in result.output


def test_dicom_overlay_uses_the_windowed_image(run: Path, tmp_path: Path, monkeypatch) -> None:
    """A narrow window (800..1200) saturates the ~1440 background: the image explain draws must show that."""
    import cadx.engine.explain as explain_module

    pixels = synthetic_image(0, np.random.default_rng(1), 36).astype(np.uint16) * 16
    write_dicom(tmp_path / "narrow.dcm", pixels, window=(1000, 400))
    assert pydicom.dcmread(tmp_path / "narrow.dcm").WindowWidth == 400
    drawn, real = [], explain_module.render_overlay

    def spy(image: np.ndarray, *args, **kwargs) -> bytes:
        drawn.append(image)
        return real(image, *args, **kwargs)

    monkeypatch.setattr(explain_module, "render_overlay", spy)
    result = invoke("explain", run, tmp_path / "narrow.dcm", "--output", tmp_path / "out", "--feature-maps", "0")
    assert result.exit_code == 0, result.output
    assert drawn[0].dtype == np.uint8 and drawn[0].shape == (36, 36)
    assert np.median(drawn[0]) == 255  # windowed; a plain min-max scaling would put the median near 120
    assert np.load(tmp_path / "out" / "narrow_heatmap.npy").shape == (36, 36)


def test_class_method_and_no_feature_maps(run: Path, inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("explain", run, inputs / "wide.png", "--output", out, "--class", "normal",
                    "--method", "gradcam++", "--feature-maps", "0")
    assert result.exit_code == 0, result.output
    assert (out / "wide_overlay.png").exists() and not (out / "wide_features.png").exists()
    assert "normal" in result.output
    bad = invoke("explain", run, inputs / "wide.png", "--output", out, "--class", "cat")
    assert bad.exit_code == 2 and "normal, pneumonia" in bad.output


def test_a_folder_with_a_bad_file_is_reported_and_the_rest_processed(run: Path, inputs: Path,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("explain", run, inputs, "--output", out, "--feature-maps", "2")
    assert result.exit_code == 0, result.output
    assert "notes.png" in result.output and "not a PNG/JPEG/BMP/TIFF/DICOM image" in result.output
    assert sorted(p.name for p in out.glob("*_heatmap.npy")) == ["scan_heatmap.npy", "wide_heatmap.npy"]
    assert not (out / "notes_overlay.png").exists()


def test_only_bad_files_exit_non_zero(run: Path, inputs: Path, tmp_path: Path) -> None:
    result = invoke("explain", run, inputs / "notes.png", "--output", tmp_path / "out")
    assert result.exit_code != 0
    assert "not a PNG/JPEG/BMP/TIFF/DICOM image" in result.output


def test_bad_layer_is_one_line_listing_valid_layers(run: Path, inputs: Path, tmp_path: Path) -> None:
    result = invoke("explain", run, inputs / "wide.png", "--output", tmp_path / "out", "--layer", "layer9")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown layer 'layer9'" in lines[0]
    assert "features.block3" in lines[0] and "classifier" in lines[0]
    assert not (tmp_path / "out").exists()


def test_default_method_and_faithfulness_json(run: Path, inputs: Path, tmp_path: Path) -> None:
    """No method named: the registry's measured default for simple_cnn; --faithfulness writes the curves."""
    out = tmp_path / "out"
    result = invoke("explain", run, inputs / "wide.png", inputs / "scan.dcm", "--output", out, "--feature-maps", "0",
                    "--faithfulness")
    assert result.exit_code == 0, result.output
    assert "Layer-CAM at features.block2" in result.output
    report = json.loads((out / "faithfulness.json").read_text())
    assert (report["method"], report["layer"], report["n"]) == ("layercam", "features.block2", 2)
    assert "grey" in report["deletion_baseline"] and "blur" in report["insertion_baseline"]
    for image in report["images"]:
        assert 0.0 <= image["deletion_auc"] <= 1.0 and 0.0 <= image["insertion_auc"] <= 1.0
        assert len(image["deletion"]) == len(image["insertion"]) == report["steps"] + 1
    assert report["mean_deletion_auc"] == pytest.approx(np.mean([i["deletion_auc"] for i in report["images"]]))
    occlusion = invoke("explain", run, inputs / "wide.png", "--output", tmp_path / "occ", "--method", "occlusion",
                       "--feature-maps", "0")
    assert occlusion.exit_code == 0, occlusion.output
    assert "occlusion, 5 px patches" in occlusion.output and not (tmp_path / "occ" / "faithfulness.json").exists()
