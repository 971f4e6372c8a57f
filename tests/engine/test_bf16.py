"""The torch-bf16 backend: bf16 autocast on the checkpoint's own network, only where bf16 is native, verified on
validation before ``auto`` takes it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cadx.data.cache import DecodedImages, decode_records
from cadx.engine import backends, bf16, hardware
from cadx.engine.backends import BackendError, choose_backend, load_predictor
from cadx.engine.config import build_config
from cadx.engine.inference import Predictor
from cadx.engine.onnx_export import export_verified
from cadx.engine.onnx_runtime import bf16_record_path, read_bf16_record
from cadx.engine.selection import select_records
from cadx.engine.training import train
from cadx.interfaces.cli import app
from tests.conftest import make_class_folders

NATIVE = hardware.native_bf16(torch.device("cpu"))
needs_native = pytest.mark.skipif(not NATIVE, reason="this CPU has no native bf16 (AVX512-BF16/AMX)")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, DecodedImages, DecodedImages]:
    base = tmp_path_factory.mktemp("bf16")
    data = make_class_folders(base / "data", 300, size=48)
    config = build_config(model="simple_cnn", epochs=5, image_size=32, batch_size=32, early_stopping=0)
    ckpt = train(data, config, base / "run").output / "best.ckpt"
    predictor = Predictor.from_checkpoint(ckpt)
    splits = {}
    for split in ("train", "val"):
        index, records = select_records(predictor.checkpoint, None, split)
        splits[split] = decode_records(index, records, predictor.pre)
    return ckpt, data, splits["train"], splits["val"]


def test_native_bf16_reads_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert hardware.native_bf16(torch.device("cpu"))
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16"}))
    assert hardware.native_bf16(torch.device("cpu"))
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert not hardware.native_bf16(torch.device("cpu"))


def test_without_native_bf16_it_is_refused_and_auto_never_takes_it(trained, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt, *_ = trained
    monkeypatch.setattr(backends, "native_bf16", lambda device: False)
    monkeypatch.setattr(bf16, "native_bf16", lambda device: False)
    checkpoint = load_predictor(ckpt, "torch").checkpoint
    with pytest.raises(BackendError, match="bf16 is not native on this cpu"):
        choose_backend(checkpoint, "torch-bf16")
    bf16_record_path(ckpt).write_text(json.dumps({"backend": "torch-bf16", "images": 1, "accuracy_torch": 1.0,
                                                  "accuracy": 1.0, "auc_torch": 1.0, "auc": 1.0,
                                                  "max_probability_difference": 0.0, "assessed_agreement": 1.0,
                                                  "passed": True, "cpu": torch.backends.cpu.get_cpu_capability()}))
    try:
        assert choose_backend(checkpoint, "auto") == ("torch", None)
    finally:
        bf16_record_path(ckpt).unlink()


@needs_native
def test_bf16_answers_like_fp32_and_keeps_the_ood_score(trained) -> None:
    ckpt, _, _, val = trained
    fp32 = Predictor.from_checkpoint(ckpt)
    fast = load_predictor(ckpt, "torch-bf16")
    assert isinstance(fast, bf16.TorchBf16Predictor) and fast.backend == "torch-bf16"
    probs, scores = fast.predict_arrays_scored(val.images)
    ref_probs, ref_scores = fp32.predict_arrays_scored(val.images)
    assert probs.dtype == np.float32 and np.abs(probs - ref_probs).max() < 0.1
    assert np.mean(probs.argmax(1) == ref_probs.argmax(1)) >= 0.97
    assert scores is not None and np.all(np.isfinite(scores))
    assert np.corrcoef(scores, ref_scores)[0, 1] > 0.99


@needs_native
def test_verified_bf16_is_taken_by_auto_after_int8_and_before_fp32_onnx(trained) -> None:
    ckpt, _, train_images, val = trained
    checkpoint = load_predictor(ckpt, "torch").checkpoint
    assert choose_backend(checkpoint, "auto") == ("torch", None)
    path, record = bf16.verify_checkpoint(ckpt)
    assert path == ckpt.with_name("best.bf16.verification.json") and record.passed
    assert read_bf16_record(ckpt) == record and record.onnxruntime is None and record.images == len(val.records)
    assert choose_backend(checkpoint, "auto") == ("torch-bf16", None)
    assert type(load_predictor(ckpt)) is bf16.TorchBf16Predictor
    export_verified(Predictor(checkpoint), ckpt.parent, int8=True, validation=val, calibration=train_images.images)
    assert choose_backend(checkpoint, "auto")[0] == "onnx-int8"
    (ckpt.parent / "model.int8.onnx").unlink()
    assert choose_backend(checkpoint, "auto")[0] == "torch-bf16"  # before the fp32 ONNX copy
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "passed": False}))
    assert choose_backend(checkpoint, "auto")[0] == "onnx"
    path.write_text(json.dumps({**raw, "cpu": "SOME_OTHER_CPU"}))
    assert choose_backend(checkpoint, "auto")[0] == "onnx"
    path.unlink()
    (ckpt.parent / "model.onnx").unlink()


@needs_native
def test_cli_export_bf16_then_predict_names_the_backend(trained, tmp_path: Path) -> None:
    ckpt, data, _, _ = trained
    runner = CliRunner()
    r = runner.invoke(app, ["export", str(ckpt), "--bf16"])
    assert r.exit_code == 0, r.output
    assert "verified torch-bf16" in r.output and bf16_record_path(ckpt).is_file()
    out = tmp_path / "pred.json"
    images = sorted((data / "normal").iterdir())[:3]
    r = runner.invoke(app, ["predict", str(ckpt), *map(str, images), "--output", str(out)])
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())
    rows = rows["predictions"] if isinstance(rows, dict) else rows
    assert len(rows) == 3 and {row["backend"] for row in rows} == {"torch-bf16"}
    bf16_record_path(ckpt).unlink()
