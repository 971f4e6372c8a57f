"""Deletion / insertion curves: a map that marks the evidence beats a random one; the baselines do what they say."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cadx.engine.explain import Explainer
from cadx.engine.faithfulness import deletion_insertion, gaussian_blur, pixel_order
from tests.conftest import memory_predictor

SIZE = 32
EVIDENCE = (slice(8, 14), slice(18, 24))  # the only pixels the tiny model reads


class RegionModel(nn.Module):
    """Two logits from the brightness of one fixed 6 x 6 region: its evidence is known exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = x[:, :, EVIDENCE[0], EVIDENCE[1]].mean(dim=(1, 2, 3))
        logit = 4.0 * (bright - 0.5)
        return torch.stack([-logit, logit], dim=1)


def lesion_image(rng: np.random.Generator) -> np.ndarray:
    img = rng.normal(100, 10, (SIZE, SIZE))
    img[EVIDENCE] = 230
    img.reshape(-1)[:2] = [0, 255]  # no min-max stretch
    return img.clip(0, 255).astype(np.uint8)


def perfect_map() -> np.ndarray:
    heat = np.zeros((SIZE, SIZE), np.float32)
    heat[EVIDENCE] = 1.0
    return heat


def test_perfect_map_beats_random_maps() -> None:
    explainer = Explainer(memory_predictor(RegionModel(), ("clear", "lesion"), size=SIZE), method="occlusion")
    rng = np.random.default_rng(0)
    img = lesion_image(rng)
    perfect = explainer.faithfulness(img, perfect_map(), 1)
    randoms = [explainer.faithfulness(img, rng.random((SIZE, SIZE)).astype(np.float32), 1) for _ in range(5)]
    assert perfect.deletion[0] > 0.9  # the model is sure before anything is removed
    assert all(perfect.deletion_auc < r.deletion_auc - 0.1 for r in randoms), \
        (perfect.deletion_auc, [r.deletion_auc for r in randoms])
    assert all(perfect.insertion_auc > r.insertion_auc + 0.1 for r in randoms)
    inverted = explainer.faithfulness(img, 1 - perfect_map(), 1)  # the inverted map Grad-CAM gave simple_cnn
    assert inverted.deletion_auc > max(r.deletion_auc for r in randoms)
    occlusion = explainer.heatmap_and_scores(img, target=1).heatmap  # the reference method finds the region
    py, px = np.unravel_index(int(np.argmax(occlusion)), occlusion.shape)
    assert EVIDENCE[0].start <= py < EVIDENCE[0].stop and EVIDENCE[1].start <= px < EVIDENCE[1].stop


def test_curves_start_and_end_at_the_baselines() -> None:
    x = torch.rand(1, 1, SIZE, SIZE)
    seen: list[torch.Tensor] = []

    def probability(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch.clone())
        return batch.mean(dim=(1, 2, 3))

    curves = deletion_insertion(probability, x, torch.rand(SIZE, SIZE), steps=8)
    deleted, inserted = seen
    assert curves.fractions[0] == 0 and curves.fractions[-1] == 1 and np.all(np.diff(curves.fractions) > 0)
    assert torch.equal(deleted[0], x[0]) and torch.allclose(deleted[-1], x.mean().expand_as(x[0]))
    assert torch.allclose(inserted[-1], x[0]) and torch.allclose(inserted[0], gaussian_blur(x, 3.2)[0])
    assert len(curves.deletion) == len(curves.insertion) == 9
    with pytest.raises(ValueError, match="steps"):
        deletion_insertion(probability, x, torch.rand(SIZE, SIZE), steps=0)


def test_blur_keeps_a_constant_image_and_ties_are_broken_reproducibly() -> None:
    flat = torch.full((1, 3, 20, 20), 0.3)
    assert torch.allclose(gaussian_blur(flat, 4.0), flat, atol=1e-6)
    zeros = torch.zeros(10, 10)
    assert torch.equal(pixel_order(zeros, seed=1), pixel_order(zeros, seed=1))
    assert sorted(pixel_order(zeros).tolist()) == list(range(100))
