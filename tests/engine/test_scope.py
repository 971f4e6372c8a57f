"""The scope check: warns only on a DICOM header or a colour image that contradicts the model's category."""

import numpy as np
import pytest

from cadx.engine.scope import COLOUR_SPREAD_LIMIT, SCOPES, colour_spread, scope_warning
from tests.conftest import colour_photo


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


def test_colour_image_is_out_of_scope_and_grey_ones_are_not() -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    grey_rgb = np.repeat(grey[..., None], 3, axis=2)
    jpeg_noise = np.clip(grey_rgb.astype(np.int16) + rng.integers(-2, 3, grey_rgb.shape), 0, 255).astype(np.uint8)
    for image in (grey, grey_rgb, jpeg_noise):
        assert colour_spread(image) < COLOUR_SPREAD_LIMIT
        assert scope_warning("Chest X-ray", None, image) is None
    text = scope_warning("Chest X-ray", {}, colour_photo())
    assert text is not None and "colour image" in text and "chest radiographs" in text
    both = scope_warning("Brain MRI", {"Modality": "US"}, colour_photo())
    assert both is not None and "Modality US" in both and "colour image" in both
    assert scope_warning("Dermatology", {}, colour_photo()) is None  # a category without a known scope


def test_a_description_naming_another_body_part_is_evidence_when_body_part_is_empty() -> None:
    shoulder = {"Modality": "MR", "StudyDescription": "SHOULDER", "ProtocolName": "T1W/SE/1024"}
    text = scope_warning("Brain MRI", shoulder)
    assert text is not None and "description names SHOULDER" in text and "brain MRI slices" in text
    assert scope_warning("Brain MRI", {"Modality": "MR", "SeriesDescription": "t1_mprage head"}) is None
    # one named part inside the scope is enough; words that are no body part are no evidence
    assert scope_warning("Chest CT", {"Modality": "CT", "StudyDescription": "CT chest/abdomen/pelvis"}) is None
    assert scope_warning("Brain MRI", {"Modality": "MR", "SeriesDescription": "AX FLAIR with contrast"}) is None
    # BodyPartExamined, when present, is the evidence and the description is not read
    assert scope_warning("Chest X-ray", {"Modality": "CR", "BodyPartExamined": "CHEST",
                                         "StudyDescription": "knee"}) is None
