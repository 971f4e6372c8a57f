"""The Predictor: files in, probabilities and one decision per file out; bad files keep their reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cadx.engine.inference import expand_inputs
from cadx.models import create_model
from tests.conftest import memory_predictor, synthetic_image, write_dicom


def test_predict_files_carries_each_files_decision(tmp_path: Path) -> None:
    torch.manual_seed(0)
    predictor = memory_predictor(create_model("simple_cnn", in_channels=1, num_classes=2),
                                 decision_threshold=0.0)  # every readable image is the finding
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(synthetic_image(i % 2, rng, 40)).save(tmp_path / f"img{i}.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    write_dicom(tmp_path / "brain.dcm", rng.integers(0, 4096, (40, 40)), modality="MR")
    files = expand_inputs([tmp_path])
    out = {Path(p.file).name: p for p in predictor.predict_files(files, batch_size=2)}
    assert set(out) == {"img0.png", "img1.png", "img2.png", "broken.png", "brain.dcm"}
    assert out["broken.png"].decision is None and out["broken.png"].error
    for name in ("img0.png", "img1.png", "img2.png", "brain.dcm"):
        assert out[name].decision.findings == ("pneumonia",) and out[name].decision.threshold == 0.0
        assert np.isclose(out[name].probabilities.sum(), 1.0)
    given = next(iter(predictor.predict_files([tmp_path / "img0.png"], threshold=1.0)))
    assert given.decision.threshold_source == "given"
    assert given.decision == predictor.decide(given.probabilities, 1.0)


def test_batches_and_single_images_agree() -> None:
    torch.manual_seed(1)
    predictor = memory_predictor(create_model("simple_cnn", in_channels=1, num_classes=2))
    images = np.random.default_rng(0).integers(0, 256, (5, 1, 32, 32), dtype=np.uint8)
    batched = predictor.predict_arrays(images, batch_size=2)
    single = np.concatenate([predictor.predict_batch(images[i:i + 1]) for i in range(5)])
    assert np.allclose(batched, single, atol=1e-5)
    assert predictor.predict_arrays(images[:0]).shape == (0, 2)
