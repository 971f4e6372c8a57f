"""Fitting calibration and operating points on validation: the temperature first, the thresholds on the calibrated
probabilities, decision_threshold the default operating point's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cadx.data.cache import DecodedImages
from cadx.data.sources import Record
from cadx.engine.calibrate import fit_on_validation
from cadx.engine.operating_points import sensitivity_specificity
from tests.conftest import memory_predictor


class Brightness(nn.Module):
    """Logits (0, 3 * 8 (brightness - 0.5)), three times the true log-odds: an over-confident detector of bright
    images (inputs normalised with mean 0.5, std 0.25: x = 4 (brightness - 0.5))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.mean(dim=(1, 2, 3)) * 6
        return torch.stack([torch.zeros_like(z), z], 1)


def _validation(n: int = 400, seed: int = 0) -> DecodedImages:
    rng = np.random.default_rng(seed)
    level = rng.uniform(0, 1, n)  # brightness of each image
    y = (rng.random(n) < 1 / (1 + np.exp(-8 * (level - 0.5)))).astype(int)  # true P(positive) = sigmoid(8 z)
    images = np.repeat((level * 255).astype(np.uint8)[:, None, None, None], 8, axis=2).repeat(8, axis=3)
    return DecodedImages([Record(f"{i}.png", int(t)) for i, t in enumerate(y)], images, [], 0.0)


def test_fit_on_validation_scales_the_temperature_and_chooses_thresholds_on_calibrated_output() -> None:
    predictor = memory_predictor(Brightness(), size=8)
    val = _validation()
    fitted = fit_on_validation(predictor, val, target_sensitivity=0.9, target_specificity=0.9)
    (t,) = fitted.calibration.temperatures
    assert t == pytest.approx(3.0, rel=0.2)
    assert fitted.calibration.nll_after < fitted.calibration.nll_before
    changes = fitted.changes(predictor.meta)
    meta = predictor.meta.with_changes(**changes)
    assert meta.default_operating_point == "balanced"
    assert meta.decision_threshold == meta.operating_point("balanced").threshold
    calibrated = predictor.__class__(predictor.checkpoint.__class__(predictor.model, meta, predictor.checkpoint.path),
                                     "cpu").predict_arrays(val.images)
    y = np.array([r.target for r in val.records])
    sens, _ = sensitivity_specificity(y == 1, calibrated[:, 1], meta.operating_point("high-sensitivity").threshold)
    _, spec = sensitivity_specificity(y == 1, calibrated[:, 1], meta.operating_point("high-specificity").threshold)
    assert sens >= 0.9 and spec >= 0.9  # the targets hold on the probabilities the model now shows


def test_too_few_validation_images_keep_identity_but_still_choose_thresholds() -> None:
    predictor = memory_predictor(Brightness(), size=8)
    val = _validation(12, seed=3)
    fitted = fit_on_validation(predictor, val)
    assert fitted.calibration is None and "not calibrated" in fitted.notes[0]
    assert [p.name for p in fitted.operating_points] == ["balanced", "high-sensitivity", "high-specificity"]
