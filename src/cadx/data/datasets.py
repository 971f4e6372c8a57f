"""Torch datasets over decoded images, and the class-imbalance helpers that go with them."""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import Compose
from torch.utils.data import Dataset, WeightedRandomSampler

from cadx.data.cache import DecodedImages


class CachedImageDataset(Dataset):
    """Returns ``(uint8 or float [0,1] image, target)``; normalisation happens per batch in the model step."""

    def __init__(self, decoded: DecodedImages, num_classes: int, multilabel: bool,
                 augmentation: Compose | None = None) -> None:
        self.images = decoded.images
        self.augmentation = augmentation
        if multilabel:
            self.targets = torch.tensor([list(r.target) for r in decoded.records], dtype=torch.float32)
        else:
            self.targets = torch.tensor([r.target for r in decoded.records], dtype=torch.long)
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(np.asarray(self.images[i]))
        if self.augmentation is not None:
            image = self.augmentation(image.float() / 255.0)
            image = torch.as_tensor(image).clamp_(0.0, 1.0)
        return image, self.targets[i]


def class_weights(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1 (the 'balanced' heuristic of scikit-learn)."""
    counts = targets.sum(0) if targets.ndim == 2 else torch.bincount(targets, minlength=num_classes)
    counts = counts.float().clamp(min=1)
    return counts.sum() / (num_classes * counts)


def balanced_sampler(targets: torch.Tensor, num_classes: int, seed: int) -> WeightedRandomSampler:
    """Draws each class equally often per epoch (single-label tasks)."""
    weights = class_weights(targets, num_classes)[targets]
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights.double(), num_samples=len(targets), replacement=True, generator=generator)
