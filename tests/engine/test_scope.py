"""The DICOM scope check: warns only on a header that contradicts the model's category."""

import pytest

from cadx.engine.scope import SCOPES, scope_warning


@pytest.mark.parametrize(("category", "header"), [
    ("Chest X-ray", {"Modality": "CR", "BodyPartExamined": "CHEST"}),
    ("Chest X-ray", {"Modality": "dx ", "BodyPartExamined": "chest"}),  # case and padding as some exporters write
    ("Chest X-ray", {"Modality": "DX"}),  # BodyPartExamined is often empty: no evidence, no warning
    ("Chest X-ray", {}),
    ("Chest X-ray", {"Modality": "OT"}),  # a secondary capture (scanned film) may well be a chest X-ray
    ("Brain MRI", {"Modality": "MR", "BodyPartExamined": "HEAD"}),
    ("Chest CT", {"Modality": "CT", "BodyPartExamined": "THORAX"}),
    ("Other", {"Modality": "MR"}),  # a category without a known scope
    (None, {"Modality": "MR"}),
])
def test_no_warning_inside_the_scope_or_without_evidence(category: str | None, header: dict[str, str]) -> None:
    assert scope_warning(category, header) is None


def test_warning_names_what_the_header_says_and_what_the_model_expects() -> None:
    text = scope_warning("Chest X-ray", {"Modality": "MR", "BodyPartExamined": "BRAIN"})
    assert text is not None
    assert "Modality MR" in text and "body part BRAIN" in text and "chest radiographs" in text
    only_part = scope_warning("Brain MRI", {"Modality": "MR", "BodyPartExamined": "KNEE"})
    assert only_part is not None and "body part KNEE" in only_part and "Modality" not in only_part
    assert "Modality CT" in scope_warning("Brain MRI", {"Modality": "CT"})


def test_every_scope_accepts_its_own_modalities() -> None:
    for category, scope in SCOPES.items():
        for modality in scope.modalities:
            for part in scope.body_parts:
                assert scope_warning(category, {"Modality": modality, "BodyPartExamined": part}) is None
