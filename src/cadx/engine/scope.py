"""Does an image fit what a model was trained on? A chest X-ray model still outputs 'NORMAL' or 'PNEUMONIA'
for a brain MRI or a holiday photo; the DICOM header, or the colour of the pixels, says so before anybody reads
the result.

Two pieces of evidence are checked against the model's category (its metadata's, e.g. ``category: Chest X-ray``,
else read from its folder name; ``cadx.engine.catalogue.category_of``, the one the server groups models by):
a DICOM header's Modality and body part, and, for any file, whether the decoded image is in colour, since every
known scope is a greyscale modality. Many exporters leave BodyPartExamined empty while the study, series or
protocol description names the part ("SHOULDER", "MRI KNEE LEFT"); then the body-part words of those descriptions
are the evidence. It only warns: a header field that is absent, a description naming no known body part, or a
category without a known scope gives no warning, and PNG/JPEG files carry no header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scope:
    modalities: frozenset[str]  # DICOM Modality defined terms (PS3.3 C.7.3.1.1.1)
    body_parts: frozenset[str]  # BodyPartExamined defined terms (PS3.16 Annex L) and description words, upper case
    trained_on: str  # for the message


_CHEST = frozenset({"CHEST", "THORAX", "LUNG", "LUNGS"})
SCOPES: dict[str, Scope] = {
    "Chest X-ray": Scope(frozenset({"CR", "DX"}), _CHEST, "chest radiographs (CR or DX)"),
    "Chest CT": Scope(frozenset({"CT"}), _CHEST, "chest CT slices"),
    "Brain MRI": Scope(frozenset({"MR"}), frozenset({"BRAIN", "HEAD", "SKULL", "CRANIUM"}), "brain MRI slices"),
}

# Body parts a description may name: BodyPartExamined defined terms (PS3.16 Annex L) and their common plain-English
# forms. A word outside this list (a sequence name, "WITH CONTRAST") is no evidence either way.
BODY_PART_WORDS = frozenset({
    "ABDOMEN", "ANKLE", "ARM", "BRAIN", "BREAST", "CHEST", "CLAVICLE", "COCCYX", "CRANIUM", "CSPINE", "ELBOW",
    "EXTREMITY", "FEMUR", "FINGER", "FOOT", "FOREARM", "HAND", "HEAD", "HEART", "HIP", "HUMERUS", "JAW", "KIDNEY",
    "KNEE", "LEG", "LIVER", "LSPINE", "LUNG", "LUNGS", "NECK", "ORBIT", "PANCREAS", "PELVIS", "PROSTATE", "SACRUM",
    "SHOULDER", "SKULL", "SPINE", "SPLEEN", "THORAX", "THUMB", "TIBIA", "TOE", "TSPINE", "UTERUS", "WRIST"})
_DESCRIPTIONS = ("StudyDescription", "SeriesDescription", "ProtocolName")

# "Other": secondary captures (a scanned film, a screenshot) say nothing about how the image was made.
UNSPECIFIC_MODALITIES = frozenset({"OT"})

# Mean over pixels of (largest - smallest RGB channel), 0-255. Measured on every third file of the shared data:
# Kermany chest X-rays 0.0 (all 1947), brain MRI JPEGs at most 3.96 (1903 files; JPEG chroma noise); colour
# photographs and logos 26-77 (matplotlib's sample images). A coloured arrow or label on a radiograph stays far below.
COLOUR_SPREAD_LIMIT = 12.0


def colour_spread(image: np.ndarray) -> float:
    """How far an (H, W, 3) image is from grey; 0 for a single-channel one."""
    if image.ndim != 3 or image.shape[2] < 3:
        return 0.0
    rgb = image[..., :3]
    return float((rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2)).mean())


def described_body_parts(header: Mapping[str, object]) -> frozenset[str]:
    """The known body-part words in the header's study, series and protocol descriptions (upper case)."""
    text = " ".join(str(header.get(k) or "") for k in _DESCRIPTIONS).upper()
    return frozenset(re.findall(r"[A-Z]+", text)) & BODY_PART_WORDS


def scope_warning(category: str | None, header: Mapping[str, object] | None = None,
                  image: np.ndarray | None = None) -> str | None:
    """A sentence for the clinician when the DICOM header or the image's colour contradicts the model's category,
    else None."""
    scope = SCOPES.get(category or "")
    if scope is None:
        return None
    header = header or {}
    found = []
    modality = str(header.get("Modality") or "").strip().upper()
    if modality and modality not in scope.modalities | UNSPECIFIC_MODALITIES:
        found.append(f"Modality {modality}")
    body_part = str(header.get("BodyPartExamined") or "").strip().upper()
    if body_part and body_part not in scope.body_parts:
        found.append(f"body part {body_part}")
    reasons = [f"the DICOM header says {' and '.join(found)}"] if found else []
    described = described_body_parts(header) if not body_part else frozenset()
    if described and not described & scope.body_parts:  # one part in scope ("CHEST ABDOMEN") is enough
        reasons.append(f"its description names {' and '.join(sorted(described))}")
    spread = colour_spread(image) if image is not None else 0.0
    if spread > COLOUR_SPREAD_LIMIT:
        reasons.append(f"it is a colour image (mean channel spread {spread:.0f} of 255; X-ray, CT and MRI are grey)")
    if not reasons:
        return None
    return (f"outside the model's scope: {'; '.join(reasons)}, but this {category} model was trained on "
            f"{scope.trained_on} only")
