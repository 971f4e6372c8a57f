"""Preprocessing shared by training, evaluation, prediction and the server, plus training-only augmentation.

``prepare_image`` runs once per image (its uint8 output is what the cache keeps); ``to_model_input`` runs per
batch. Keeping both here means a prediction from the CLI and one from the web page cannot differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from cadx.data.preprocessing import Preprocessing

if TYPE_CHECKING:  # torch and MONAI are imported where they are used: reading a checkpoint's metadata needs neither
    import torch
    from monai.transforms import Compose

def prepare_image(image: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Decoded uint8 (H, W[, 3]) -> uint8 (C, S, S): channels matched, intensity stretched, resized."""
    if image.ndim == 3 and pre.channels == 1:
        image = np.asarray(Image.fromarray(image[..., :3]).convert("L"))
    image = _stretch(image)
    size = (pre.image_size, pre.image_size)
    if image.ndim == 2:
        resized = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR, reducing_gap=3.0))[None]
        return np.repeat(resized, pre.channels, axis=0) if pre.channels == 3 else resized
    resized = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR, reducing_gap=3.0))
    return np.ascontiguousarray(resized.transpose(2, 0, 1))


def _stretch(image: np.ndarray) -> np.ndarray:
    """Per-image min-max scaling to the full 0..255 range (exposure differs between scanners)."""
    lo, hi = int(image.min()), int(image.max())
    if hi - lo < 1 or (lo == 0 and hi == 255):
        return image
    scaled = (image.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return scaled.round().astype(np.uint8)


def to_model_input(batch: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """uint8 or [0, 1] float (B, C, S, S) -> float32 normalised per channel."""
    import torch

    x = batch.float()
    if batch.dtype == torch.uint8:
        x = x / 255.0
    mean = torch.tensor(pre.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(pre.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


@dataclass(frozen=True)
class Augmentation:
    """Geometric and intensity jitter of the size used for chest X-ray CNNs (rotation, zoom, shift, exposure):
    images from another hospital differ in positioning and exposure far more than a training set does."""

    flip: bool = True
    rotate_degrees: float = 15.0
    zoom: float = 0.15
    translate: float = 0.1  # fraction of the image size
    brightness: float = 0.1
    contrast: float = 0.2
    prob: float = 0.8


def build_augmentation(aug: Augmentation | None, image_size: int, seed: int = 0) -> Compose | None:
    """MONAI random transforms on a (C, S, S) float tensor in [0, 1]; training only.

    MONAI transforms draw from their own NumPy generator, which ``seed_everything`` does not reach (unseeded, it
    starts from OS entropy and a run cannot be repeated), so it is seeded here; DataLoader workers re-seed their
    copy (``monai.data.utils.worker_init_fn``)."""
    if aug is None:
        return None
    from monai.transforms import Compose, RandAdjustContrast, RandAffine, RandFlip, RandScaleIntensity

    steps = []
    if aug.flip:
        steps.append(RandFlip(prob=0.5, spatial_axis=1))
    if aug.rotate_degrees or aug.zoom or aug.translate:
        shift = aug.translate * image_size
        steps.append(RandAffine(prob=aug.prob, rotate_range=np.deg2rad(aug.rotate_degrees),
                                scale_range=(aug.zoom, aug.zoom), translate_range=(shift, shift),
                                padding_mode="border"))
    if aug.brightness:
        steps.append(RandScaleIntensity(factors=aug.brightness, prob=aug.prob))
    if aug.contrast:
        steps.append(RandAdjustContrast(prob=aug.prob, gamma=(1 - aug.contrast, 1 + aug.contrast)))
    return Compose(steps).set_random_state(seed=seed)
