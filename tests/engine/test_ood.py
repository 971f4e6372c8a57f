"""The out-of-distribution score fitted after training keeps the model's own kind of image and rejects another."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cadx.engine.checkpoint import read_meta
from cadx.engine.config import build_config
from cadx.engine.inference import Predictor, expand_inputs
from cadx.engine.ood import STD_SUFFIX, OodModel, fit_ood, logits_and_features
from cadx.engine.training import train
from tests.conftest import make_class_folders


def other_kind(rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """Smooth diagonal gradients with stripes: nothing like the noise-and-square training images."""
    yy, xx = np.indices((size, size))
    phase = rng.uniform(0, 2 * np.pi)
    return (127 + 120 * np.sin((xx + yy) / rng.uniform(2, 5) + phase)).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("ood")
    data = make_class_folders(base / "data", 300, size=48)  # 20 % validation: 120 images, enough for the limit
    config = build_config(model="simple_cnn", epochs=2, image_size=32, batch_size=32, early_stopping=0)
    return train(data, config, base / "run").output


def test_training_fits_a_score_that_keeps_a_and_b_and_rejects_c(run: Path, tmp_path: Path) -> None:
    meta = read_meta(run / "best.ckpt")
    assert meta.ood is not None and meta.ood["method"] == "mahalanobis" and meta.ood["keep"] == 0.99
    rng = np.random.default_rng(5)
    for i in range(20):
        Image.fromarray(other_kind(rng)).save(tmp_path / f"c{i}.png")
    Image.fromarray(np.full((48, 48), 90, np.uint8)).save(tmp_path / "blank.png")
    own = make_class_folders(tmp_path / "own", 20, size=48, seed=9)
    predictor = Predictor.from_checkpoint(run)
    foreign = list(predictor.predict_files(sorted(tmp_path.glob("*.png"))))
    kept = list(predictor.predict_files(expand_inputs([own])))
    assert all(not p.decision.assessed for p in foreign)
    assert "blank" in next(p for p in foreign if p.file.endswith("blank.png")).decision.reason
    assert all("unlike the images" in p.decision.reason for p in foreign if not p.file.endswith("blank.png"))
    assert np.mean([p.decision.assessed for p in kept]) >= 0.9  # 99 % of validation is kept; 40 fresh images


def test_fit_places_the_limit_on_validation_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    features = np.r_[rng.normal(0, 1, (300, 8)), rng.normal(3, 1, (300, 8))]
    targets = np.r_[np.zeros(300, int), np.ones(300, int)]
    val = np.r_[rng.normal(0, 1, (100, 8)), rng.normal(3, 1, (100, 8))]
    logits = rng.normal(0, 3, (len(features), 2))
    val_logits = rng.normal(0, 3, (200, 2))
    train = (logits, {"s1": features, "s2": features[:, :4]}, targets)
    held = (val_logits, {"s1": val, "s2": val[:, :4]})
    for method in ("mahalanobis", "energy"):
        model = fit_ood(train, held, method=method, keep=0.95)
        scores = model.score(*held)
        assert (scores <= model.threshold).mean() == pytest.approx(0.95, abs=0.01)
        again = OodModel.from_dict(model.to_dict())
        assert again.threshold == pytest.approx(model.threshold)
        assert np.allclose(again.score(*held), scores, rtol=1e-4, atol=1e-3)  # stored as float32
    far = fit_ood(train, held)
    assert set(far.stages) == {"s1", "s2"} and far.fitted["stages"] == {"s1": 8, "s2": 4}
    away = {"s1": np.full((1, 8), 20.0), "s2": np.full((1, 4), 20.0)}
    assert far.score(np.zeros((1, 2)), away)[0] > far.threshold
    with pytest.raises(ValueError, match="unknown out-of-distribution method"):
        fit_ood(train, held, method="odin")


def test_features_are_each_stage_s_channel_means_and_spreads_and_older_fits_still_score() -> None:
    class TwoStages(nn.Module):
        stage_names = ("a", "b")

        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 2, 8)  # b: an 8 px input gives a 1 x 1 map

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x)).flatten(1)

    model = TwoStages().eval()
    x = torch.randn(4, 1, 8, 8)
    logits, features = logits_and_features(model, x)
    assert set(features) == {"a", f"a{STD_SUFFIX}", "b"}  # no spread for a 1 x 1 map
    out = model.a(x).detach().flatten(2)
    assert torch.allclose(features["a"], out.mean(2)) and torch.allclose(features[f"a{STD_SUFFIX}"], out.std(2))
    rng = np.random.default_rng(0)
    train = {k: rng.normal(0, 1, (200, v.shape[1])) for k, v in features.items()}
    means_only = fit_ood((rng.normal(0, 1, (200, 2)), {"a": train["a"], "b": train["b"]}, np.zeros(200, int)),
                         (rng.normal(0, 1, (100, 2)), {"a": train["a"][:100], "b": train["b"][:100]}))
    feats = {k: v.numpy() for k, v in features.items()}
    # a score fitted on the means alone ignores the spreads it was not fitted on
    assert np.isfinite(means_only.score(logits.detach().numpy(), feats)).all()


def test_each_class_gets_its_own_covariance_and_shared_fits_still_score() -> None:
    """A tight class and a wide one: next to the tight class but far beyond its spread is foreign with a covariance
    per class; a class with too few images gives one covariance shared by all, the format older fits stored."""
    rng = np.random.default_rng(1)
    tight, wide = rng.normal(0, 0.1, (400, 4)), rng.normal(10, 3, (400, 4))
    targets = np.r_[np.zeros(400, int), np.ones(400, int)]
    val = np.r_[rng.normal(0, 0.1, (200, 4)), rng.normal(10, 3, (200, 4))]
    train = (np.zeros((800, 2)), {"s": np.r_[tight, wide]}, targets)
    held = (np.zeros((400, 2)), {"s": val})
    per_class = fit_ood(train, held)
    assert per_class.fitted["covariance"] == "per class" and per_class.stages["s"].precision.shape == (2, 4, 4)
    beside_tight = {"s": np.full((1, 4), -1.5)}  # 15 of the tight class's spreads away, half a wide one
    assert per_class.score(np.zeros((1, 2)), beside_tight)[0] > per_class.threshold
    few = (np.zeros((419, 2)), {"s": np.r_[tight, wide[:19]]}, np.r_[np.zeros(400, int), np.ones(19, int)])
    shared = fit_ood(few, held)
    assert shared.fitted["covariance"] == "shared" and shared.stages["s"].precision.shape == (4, 4)
    assert shared.stages["s"].logdets is None
    stored = shared.to_dict()
    assert "logdets" not in stored["stages"]["s"]  # the format checkpoints fitted before had
    again = OodModel.from_dict(stored)
    assert np.allclose(again.score(*held), shared.score(*held), rtol=1e-4, atol=1e-3)
    assert np.allclose(OodModel.from_dict(per_class.to_dict()).score(*held), per_class.score(*held),
                       rtol=1e-4, atol=1e-3)
