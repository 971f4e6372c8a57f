"""ONNX Runtime copies of a checkpoint give the torch model's answers, keep its out-of-distribution score, and are
refused when they do not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cadx.data.cache import DecodedImages, decode_records
from cadx.engine.backends import BackendError, OnnxPredictor, choose_backend, load_predictor
from cadx.engine.config import build_config
from cadx.engine.inference import Predictor
from cadx.engine.onnx_export import export_onnx, export_verified, verify
from cadx.engine.onnx_runtime import OnnxNetwork, read_verification, verification_path
from cadx.engine.selection import select_records
from cadx.engine.training import train
from cadx.models import create_model
from tests.conftest import make_class_folders


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Predictor, DecodedImages, DecodedImages]:
    base = tmp_path_factory.mktemp("onnx")
    data = make_class_folders(base / "data", 300, size=48)
    config = build_config(model="simple_cnn", epochs=5, image_size=32, batch_size=32, early_stopping=0)
    predictor = Predictor.from_checkpoint(train(data, config, base / "run").output / "best.ckpt")
    splits = {}
    for split in ("train", "val"):
        index, records = select_records(predictor.checkpoint, None, split)
        splits[split] = decode_records(index, records, predictor.pre)
    return predictor, splits["train"], splits["val"]


def test_fp32_graph_gives_torch_logits_and_features(trained, tmp_path: Path) -> None:
    predictor, _, val = trained
    names = export_onnx(predictor.model, predictor.pre, tmp_path / "model.onnx")
    network = OnnxNetwork(tmp_path / "model.onnx")
    assert network.feature_names == names and "features.block3" in names
    batch = val.images[:7]
    logits, features = network.logits_and_features(batch)
    torch_logits, torch_features = predictor.logits_and_features(batch)
    np.testing.assert_allclose(logits, torch_logits, atol=1e-4)
    assert set(features) == set(torch_features)
    for key, value in features.items():
        np.testing.assert_allclose(value, torch_features[key], atol=1e-4)
    assert np.array_equal(network.logits(batch), logits)


def test_verified_export_writes_both_copies_with_their_records(trained, tmp_path: Path) -> None:
    predictor, train_images, val = trained
    results = export_verified(predictor, tmp_path, int8=True, validation=val, calibration=train_images.images)
    assert [p.name for p, _ in results] == ["model.onnx", "model.int8.onnx"]
    fp32, int8 = (record for _, record in results)
    assert fp32.passed and fp32.accuracy == fp32.accuracy_torch and fp32.max_probability_difference < 1e-4
    assert fp32.assessed_agreement == 1.0 and fp32.images == len(val.records)
    assert int8.passed and int8.accuracy_torch - int8.accuracy <= 0.005
    stored = read_verification(tmp_path / "model.int8.onnx")
    assert stored == int8
    assert json.loads(verification_path(tmp_path / "model.int8.onnx").read_text())["backend"] == "onnx-int8"


def test_a_copy_that_answers_differently_is_refused_and_deleted(trained, tmp_path: Path) -> None:
    predictor, _, val = trained
    torch.manual_seed(3)
    other = create_model("simple_cnn", in_channels=predictor.meta.model.in_channels, num_classes=2,
                         **predictor.meta.model.options)
    export_onnx(other, predictor.pre, tmp_path / "other.onnx")
    targets = [r.target for r in val.records]
    record = verify(predictor, OnnxNetwork(tmp_path / "other.onnx"), "onnx", val.images, targets)
    assert not record.passed and record.accuracy_torch - record.accuracy > 0.005
    # calibrating int8 on blank images collapses every activation range: the copy must be refused, not shipped
    blank = np.zeros_like(val.images[:32])
    (tmp_path / "out").mkdir()
    (fp32, kept), (int8, refused) = export_verified(predictor, tmp_path / "out", int8=True, validation=val,
                                                    calibration=blank)
    assert kept.passed and fp32.is_file() and read_verification(fp32) == kept
    assert not refused.passed and refused.accuracy_torch - refused.accuracy > 0.005
    assert "onnx-int8: accuracy" in refused.summary() and "assessed agreement >=" in refused.limits
    assert not int8.exists() and read_verification(int8) is None


def test_auto_takes_the_verified_int8_copy_and_never_an_unverified_one(trained) -> None:
    predictor, train_images, val = trained
    folder = predictor.checkpoint.path.parent
    assert choose_backend(predictor.checkpoint, "auto") == ("torch", None)
    with pytest.raises(BackendError, match="no verified model.onnx beside the checkpoint; make one with"):
        choose_backend(predictor.checkpoint, "onnx")
    export_verified(predictor, folder, int8=True, validation=val, calibration=train_images.images)
    assert choose_backend(predictor.checkpoint, "auto") == ("onnx-int8", folder / "model.int8.onnx")
    fast = load_predictor(predictor.checkpoint.path)
    assert isinstance(fast, OnnxPredictor) and fast.backend == "onnx-int8"
    exact = load_predictor(predictor.checkpoint.path, "onnx")
    probs, scores = exact.predict_arrays_scored(val.images)
    torch_probs, torch_scores = predictor.predict_arrays_scored(val.images)
    np.testing.assert_allclose(probs, torch_probs, atol=1e-4)
    np.testing.assert_allclose(scores, torch_scores, rtol=1e-3, atol=1e-3)
    fast_probs, _ = fast.predict_arrays_scored(val.images)
    assert np.abs(fast_probs - torch_probs).max() < 0.2
    # a record that says it failed (or none at all) keeps a copy out of use
    record = verification_path(folder / "model.int8.onnx")
    record.write_text(record.read_text().replace('"passed": true', '"passed": false'))
    assert choose_backend(predictor.checkpoint, "auto")[0] == "onnx"
    verification_path(folder / "model.onnx").unlink()
    assert choose_backend(predictor.checkpoint, "auto") == ("torch", None)
    assert type(load_predictor(predictor.checkpoint.path)) is Predictor
    with pytest.raises(BackendError, match="unknown backend 'tensorrt'"):
        choose_backend(predictor.checkpoint, "tensorrt")


def test_an_int8_copy_verified_on_another_kind_of_cpu_is_not_used(trained, tmp_path: Path) -> None:
    predictor, train_images, val = trained
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.ckpt").write_bytes(predictor.checkpoint.path.read_bytes())
    export_verified(predictor, run, int8=True, validation=val, calibration=train_images.images)
    checkpoint = load_predictor(run / "best.ckpt", "torch").checkpoint
    assert choose_backend(checkpoint, "auto")[0] == "onnx-int8"
    record = verification_path(run / "model.int8.onnx")
    raw = json.loads(record.read_text())
    record.write_text(json.dumps({**raw, "cpu": "SOME_OTHER_CPU"}))
    assert choose_backend(checkpoint, "auto")[0] == "onnx"  # the fp32 copy is not tied to the CPU
    with pytest.raises(BackendError, match="was verified on a SOME_OTHER_CPU CPU"):
        choose_backend(checkpoint, "onnx-int8")


def test_the_exported_file_is_self_contained(trained, tmp_path: Path) -> None:
    predictor, _, _ = trained
    export_onnx(predictor.model, predictor.pre, tmp_path / "model.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_copy_declines_by_its_own_threshold_fitted_on_its_validation_scores(trained, tmp_path: Path) -> None:
    predictor, train_images, val = trained
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.ckpt").write_bytes(predictor.checkpoint.path.read_bytes())
    (_, _), (int8_file, record) = export_verified(predictor, run, int8=True, validation=val,
                                                  calibration=train_images.images)
    assert record.ood_threshold is not None and read_verification(int8_file).ood_threshold == record.ood_threshold
    fast = load_predictor(run / "best.ckpt", "onnx-int8")
    assert fast.ood.threshold == record.ood_threshold != predictor.ood.threshold
    _, copy_scores = fast.predict_arrays_scored(val.images)
    kept = float(np.mean(copy_scores <= fast.ood.threshold))  # the checkpoint's rule, on the copy's own scores
    assert abs(kept - predictor.ood.keep) <= 1.5 / len(val.images)
    # a record from before the copy's threshold existed: the checkpoint's threshold, as then
    path = verification_path(int8_file)
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in raw.items() if k != "ood_threshold"}))
    assert load_predictor(run / "best.ckpt", "onnx-int8").ood.threshold == predictor.ood.threshold
