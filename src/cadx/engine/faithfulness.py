"""Deletion and insertion curves (Petsiuk et al. 2018, RISE): does the heatmap rank pixels by what the model uses?

Deletion removes the most salient pixels first and follows the explained class's probability down: a faithful map
makes it fall fast (low AUC). Insertion starts from an image without the evidence and puts the most salient pixels
back first: a faithful map makes the probability rise fast (high AUC). Both run on the model's input (after
resizing and normalisation), one batch per curve, at pixel fractions (k / steps)^2, k = 0..steps: a lesion is a few
per cent of the image, so equal steps of 1/16 would delete it in the first step under any roughly placed map and
every map would score alike; the squared spacing puts the resolution where the most salient pixels go. The AUC is
the trapezoid area over the fraction axis, 0..1, as with equal steps.

Baselines (what a removed pixel becomes):

* deletion: the image's own mean grey (per channel), so a removed region carries no structure;
* insertion: the image blurred with a Gaussian of sigma = 1/10 of its side, as in the paper: a blob or a lung
  opacity dissolves into the background, while the overall brightness the model also sees is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

DELETION_BASELINE = "image mean grey (per channel)"
INSERTION_BASELINE = "Gaussian blur, sigma = side / 10"
FRACTIONS = "(k / steps)^2, k = 0..steps"
DEFAULT_STEPS = 32


@dataclass(frozen=True)
class Curves:
    """Probability of the explained class after each fraction of pixels was deleted / inserted."""

    fractions: np.ndarray  # (steps + 1,) 0 .. 1
    deletion: np.ndarray
    insertion: np.ndarray

    @property
    def deletion_auc(self) -> float:
        return float(np.trapezoid(self.deletion, self.fractions))

    @property
    def insertion_auc(self) -> float:
        return float(np.trapezoid(self.insertion, self.fractions))

    def as_dict(self) -> dict[str, object]:
        return {"deletion_auc": self.deletion_auc, "insertion_auc": self.insertion_auc,
                "deletion": [round(float(v), 5) for v in self.deletion],
                "insertion": [round(float(v), 5) for v in self.insertion]}


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (B, C, H, W) tensor, reflect-padded (no dark border)."""
    radius = max(1, int(3 * sigma))
    radius = min(radius, x.shape[2] - 1, x.shape[3] - 1)
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    out = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def pixel_order(saliency: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Flat pixel indices, most salient first; ties (e.g. an all-zero map) broken by a seeded random order."""
    flat = saliency.reshape(-1).float()
    generator = torch.Generator().manual_seed(seed)
    jitter = torch.rand(flat.numel(), generator=generator).to(flat.device)
    span = float(flat.max() - flat.min())
    return torch.argsort(flat + jitter * 1e-6 * (span if span > 0 else 1.0), descending=True)


def deletion_insertion(probability: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                       saliency: torch.Tensor | np.ndarray, *, steps: int = DEFAULT_STEPS,
                       seed: int = 0) -> Curves:
    """Curves for a (1, C, H, W) normalised input and a saliency map of any size (resized to H x W).

    ``probability`` maps a batch to the explained class's probability, one value per image.
    """
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected a (1, C, H, W) input, got {tuple(x.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    height, width = x.shape[2:]
    sal = torch.as_tensor(np.asarray(saliency, dtype=np.float32) if isinstance(saliency, np.ndarray) else saliency)
    sal = sal.float().reshape(1, 1, *sal.shape[-2:]).to(x.device)
    if sal.shape[-2:] != (height, width):
        sal = F.interpolate(sal, size=(height, width), mode="bilinear", align_corners=False)
    order = pixel_order(sal, seed)
    fractions = np.linspace(0.0, 1.0, steps + 1) ** 2
    counts = [round(f * order.numel()) for f in fractions]
    # rank[p] = position of pixel p in the order; a step keeps the pixels whose rank is below its count
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    masks = torch.stack([(rank < c) for c in counts]).view(len(counts), 1, height, width).to(x.dtype)
    grey = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    blurred = gaussian_blur(x, max(1.0, min(height, width) / 10))
    with torch.no_grad():
        deleted = masks * grey + (1 - masks) * x  # masked pixels are removed
        inserted = masks * x + (1 - masks) * blurred  # masked pixels are put back
        deletion = probability(deleted).reshape(-1).float().cpu().numpy()
        insertion = probability(inserted).reshape(-1).float().cpu().numpy()
    return Curves(fractions=fractions, deletion=deletion, insertion=insertion)
