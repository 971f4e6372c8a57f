"""Input quality checks: cheap tests on the decoded image, before the network sees it, for images no model can
judge (a blank frame, a thumbnail, a strip, a burnt-out exposure). Each failed check is a named reason; an image
that fails one is "not assessed".

The floors were measured on every image of ``../shared/datasets`` (Kermany chest X-rays, brain MRI, lung CT,
PneumoniaMNIST, the DICOM files) by ``benchmarks/abstention/quality_on_shared.py``: see its JSON for how many
images each check rejects there (none of the radiographs, CT or MRI slices; three of the DICOM files, which are
deliberately tiny test objects, and near-constant or two-level test patterns).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Standard deviation of the grey values (0-255) below which an image is treated as blank. Real radiographs, CT and
# MRI slices measured >= 19 on the shared data; a constant image is 0, JPEG noise on a constant image < 2.
MIN_STD = 4.0
# Shannon entropy (bits) of the 256-bin grey histogram below which an image carries almost no information. Lung CT
# slices, mostly black air around the body, measured down to 0.70 bits; a constant image is 0.
MIN_ENTROPY_BITS = 0.5
# Grey levels that each hold at least 0.01 % of the pixels: a mask, a drawing or a two-level test pattern has a
# handful; every shared radiograph, CT and MRI slice has far more (see the benchmark's JSON).
MIN_LEVELS = 16
# The shorter side must be at least this share of the model's input side (and at least MIN_SIDE_PX): a 1x1 PNG or a
# 10-px icon stretched to 128 px is not an image of anything.
MIN_SIDE_SHARE = 0.125  # an eighth: a 28 px MedMNIST image is still fine for a 224 px model
MIN_SIDE_PX = 16
MAX_ASPECT = 4.0  # longer / shorter side; radiographs and slices are between 1 and ~1.6 on the shared data
# Share of pixels burnt out (>= 253) above which the frame is over-exposed, and of pixels black (<= 2) above which
# it is a black frame with a speck. Lung CT slices are up to 96 % black (air), so the black limit is high.
MAX_WHITE = 0.5
MAX_BLACK = 0.99


@dataclass(frozen=True)
class QualityReport:
    std: float
    entropy_bits: float
    levels: int
    short_side: int
    aspect: float
    white: float
    black: float

    @classmethod
    def of(cls, image: np.ndarray) -> QualityReport:
        grey = image if image.ndim == 2 else image[..., :3].mean(axis=2)
        grey = np.asarray(grey, dtype=np.float32)
        counts = np.bincount(np.clip(grey, 0, 255).astype(np.uint8).ravel(), minlength=256).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        h, w = image.shape[:2]
        return cls(std=float(grey.std()), entropy_bits=max(0.0, float(-(p * np.log2(p)).sum())),
                   levels=int((counts >= 1e-4 * counts.sum()).sum()), short_side=int(min(h, w)),
                   aspect=float(max(h, w) / max(min(h, w), 1)), white=float(np.mean(grey >= 253)),
                   black=float(np.mean(grey <= 2)))


def quality_problem(image: np.ndarray, input_size: int) -> str | None:
    """Why a decoded uint8 image cannot be judged by a model taking ``input_size`` px inputs, else None."""
    q = QualityReport.of(image)
    min_side = max(MIN_SIDE_PX, int(round(MIN_SIDE_SHARE * input_size)))
    if q.short_side < min_side:
        return (f"image too small ({image.shape[1]}x{image.shape[0]} px; the model needs at least {min_side} px on "
                f"the shorter side for its {input_size} px input)")
    if q.aspect > MAX_ASPECT:
        return f"extreme aspect ratio ({q.aspect:.1f}:1, at most {MAX_ASPECT:g}:1)"
    if q.std < MIN_STD or q.entropy_bits < MIN_ENTROPY_BITS:
        return (f"blank or near-constant image (grey-level spread {q.std:.1f}, entropy {q.entropy_bits:.1f} bits; "
                f"floors {MIN_STD:g} and {MIN_ENTROPY_BITS:g})")
    if q.levels < MIN_LEVELS:
        return f"too few grey levels for a scan ({q.levels}, at least {MIN_LEVELS}): a mask, drawing or test pattern"
    if q.white > MAX_WHITE:
        return f"over-exposed frame ({100 * q.white:.0f} % of pixels white, at most {100 * MAX_WHITE:g} %)"
    if q.black > MAX_BLACK:
        return f"black frame ({100 * q.black:.1f} % of pixels black, at most {100 * MAX_BLACK:g} %)"
    return None
