"""Ensembles and flip test-time augmentation average probabilities exactly as documented."""

import numpy as np
import pytest
import torch

from cadx.engine.inference import EnsemblePredictor, Predictor
from cadx.models import create_model
from tests.conftest import memory_predictor


def predictor(seed: int, size: int = 32, classes: tuple[str, ...] = ("normal", "pneumonia")) -> Predictor:
    torch.manual_seed(seed)
    model = create_model("simple_cnn", in_channels=1, num_classes=len(classes))
    return memory_predictor(model, classes, size=size, name=f"member{seed}")


def batch(n: int = 4, size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 1, size, size), dtype=np.uint8)


def test_ensemble_is_the_mean_of_its_members() -> None:
    a, b = predictor(0), predictor(1)
    x = batch()
    expected = (a.predict_batch(x) + b.predict_batch(x)) / 2
    assert np.allclose(EnsemblePredictor([a, b]).predict_batch(x), expected, atol=1e-6)
    assert not np.allclose(a.predict_batch(x), b.predict_batch(x))  # the members really differ


def test_flip_tta_averages_the_image_and_its_mirror() -> None:
    a = predictor(0)
    x = batch()
    mirrored = np.ascontiguousarray(x[..., ::-1])
    expected = (a.predict_batch(x) + a.predict_batch(mirrored)) / 2
    tta = EnsemblePredictor([a], flip=True)
    assert np.allclose(tta.predict_batch(x), expected, atol=1e-6)
    assert np.allclose(tta.predict_batch(torch.as_tensor(x)), expected, atol=1e-6)
    assert np.allclose(tta.predict_arrays(x, batch_size=3).sum(axis=1), 1.0, atol=1e-5)


def test_members_of_different_tasks_are_refused() -> None:
    with pytest.raises(ValueError, match="only checkpoints of one task"):
        EnsemblePredictor([predictor(0), predictor(1, classes=("a", "b", "c"))])
    with pytest.raises(ValueError, match="only checkpoints of one task"):
        EnsemblePredictor([predictor(0), predictor(1, size=48)])
