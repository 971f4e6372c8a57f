"""Each input quality check rejects what it names and keeps ordinary medical-looking images."""

from __future__ import annotations

import numpy as np
import pytest

from cadx.data.quality import QualityReport, quality_problem
from tests.conftest import synthetic_image


@pytest.mark.parametrize(("image", "reason"), [
    (np.zeros((1, 1), np.uint8), "too small"),
    (np.full((512, 512), 128, np.uint8), "blank"),
    (np.full((64, 64, 3), 200, np.uint8), "blank"),
    ((np.indices((256, 256)).sum(0) % 2 * 255).astype(np.uint8), "too few grey levels"),  # a test pattern
    (np.random.default_rng(0).integers(0, 256, (12, 12), dtype=np.uint8), "too small"),
    (np.random.default_rng(0).integers(0, 256, (40, 400), dtype=np.uint8), "aspect ratio"),
    (np.where(np.random.default_rng(0).random((256, 256)) < 0.999, 0, 255).astype(np.uint8), "blank"),
])
def test_each_check_names_its_reason(image: np.ndarray, reason: str) -> None:
    problem = quality_problem(image, 128)
    assert problem is not None and reason in problem


def test_over_exposed_and_black_frames_are_refused() -> None:
    rng = np.random.default_rng(0)
    burnt = np.where(rng.random((256, 256)) < 0.6, 255, rng.integers(0, 256, (256, 256))).astype(np.uint8)
    assert QualityReport.of(burnt).white > 0.5 and "over-exposed" in quality_problem(burnt, 128)
    black = np.where(rng.random((256, 256)) < 0.995, 0, rng.integers(0, 256, (256, 256))).astype(np.uint8)
    assert "black frame" in quality_problem(black, 128) or "blank" in quality_problem(black, 128)
    ct_like = np.where(rng.random((256, 256)) < 0.9, 0, rng.integers(20, 230, (256, 256))).astype(np.uint8)
    assert quality_problem(ct_like, 128) is None  # mostly black air around a body is a normal CT slice


def test_ordinary_images_pass() -> None:
    rng = np.random.default_rng(0)
    for label in (0, 1):
        assert quality_problem(synthetic_image(label, rng, 48), 32) is None
    assert quality_problem(synthetic_image(1, rng, 28), 28) is None  # a 28 px model takes 28 px images
    wide = rng.normal(100, 30, (300, 600)).clip(0, 255).astype(np.uint8)
    assert quality_problem(wide, 128) is None  # 2:1 is allowed
    assert quality_problem(synthetic_image(1, rng, 28), 224) is None  # PneumoniaMNIST upscaled, as MedMNIST v2 does
    assert "too small" in quality_problem(synthetic_image(1, rng, 12), 128)
