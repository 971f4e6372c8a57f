"""Does a DICOM file fit what a model was trained on? A chest X-ray model still outputs 'NORMAL' or 'PNEUMONIA'
for a brain MRI; the DICOM header says so before anybody reads the result.

The check compares the header's Modality and BodyPartExamined with the model's category (its metadata's, e.g.
``category: Chest X-ray``, else read from its folder name; ``cadx.engine.checkpoint.category_for``, the one the
server groups models by). It only warns: a header field that is absent or a category without a known scope gives
no warning, since many exporters leave BodyPartExamined empty and PNG/JPEG files carry no header at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    modalities: frozenset[str]  # DICOM Modality defined terms (PS3.3 C.7.3.1.1.1)
    body_parts: frozenset[str]  # BodyPartExamined defined terms (PS3.16 Annex L), upper case
    trained_on: str  # for the message


_CHEST = frozenset({"CHEST", "THORAX", "LUNG"})
SCOPES: dict[str, Scope] = {
    "Chest X-ray": Scope(frozenset({"CR", "DX"}), _CHEST, "chest radiographs (CR or DX)"),
    "Chest CT": Scope(frozenset({"CT"}), _CHEST, "chest CT slices"),
    "Brain MRI": Scope(frozenset({"MR"}), frozenset({"BRAIN", "HEAD", "SKULL"}), "brain MRI slices"),
}

# "Other": secondary captures (a scanned film, a screenshot) say nothing about how the image was made.
UNSPECIFIC_MODALITIES = frozenset({"OT"})


def scope_warning(category: str | None, header: Mapping[str, object]) -> str | None:
    """A sentence for the clinician when the header contradicts the model's category, else None."""
    scope = SCOPES.get(category or "")
    if scope is None:
        return None
    found = []
    modality = str(header.get("Modality") or "").strip().upper()
    if modality and modality not in scope.modalities | UNSPECIFIC_MODALITIES:
        found.append(f"Modality {modality}")
    body_part = str(header.get("BodyPartExamined") or "").strip().upper()
    if body_part and body_part not in scope.body_parts:
        found.append(f"body part {body_part}")
    if not found:
        return None
    return (f"outside the model's scope: the DICOM header says {' and '.join(found)}, but this {category} model "
            f"was trained on {scope.trained_on} only; do not rely on its result for this image")
