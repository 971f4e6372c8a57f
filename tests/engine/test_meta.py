"""CheckpointMeta: the stored form round-trips, older formats migrate (the shipped models among them), bad metadata
is refused with a reason."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from cadx.data.transforms import Preprocessing
from cadx.engine.meta import FORMAT_VERSION, CheckpointError, CheckpointMeta, migrate, new_meta

SHIPPED = Path(__file__).resolve().parents[2] / "models"

FORMAT_1 = {  # as cadx 0.1.0 wrote it (the shipped models' form)
    "format": 1, "cadx_version": "0.1.0",
    "model": {"name": "resnet18", "options": {}, "in_channels": 1, "num_classes": 2, "params": 11171266},
    "classes": ["NORMAL", "PNEUMONIA"], "task": "multiclass", "positive_index": 1, "decision_threshold": 0.59,
    "preprocessing": {"image_size": 128, "channels": 1, "mean": 0.5, "std": 0.25, "window": None},
    "data": {"source": "/data/kermany", "kind": "folder", "patient_pattern": "^(person\\d+)"},
    "split": {"train": ["a.png"], "val": ["b.png"], "test": ["c.png"]}, "config": {"seed": 2},
    "category": "Chest X-ray", "an_old_extra": 7,
}


def test_format_1_migrates_to_the_current_form() -> None:
    meta = CheckpointMeta.from_dict(FORMAT_1)
    assert meta.format == FORMAT_VERSION and meta.classes == ("NORMAL", "PNEUMONIA")
    assert meta.preprocessing == Preprocessing(128, 1, mean=(0.5,), std=(0.25,))
    assert meta.decision_threshold == 0.59 and meta.threshold_source.startswith("validation")
    assert meta.provenance.source == "/data/kermany" and meta.provenance.cadx_version == "0.1.0"
    assert meta.provenance.patient_pattern == "^(person\\d+)" and meta.split["test"] == ("c.png",)
    assert meta.extensions == {"an_old_extra": 7}  # unknown keys survive
    assert meta.binary and not meta.multilabel and meta.category == "Chest X-ray"
    assert migrate(FORMAT_1)["format"] == FORMAT_VERSION


def test_format_2_migrates_to_identity_calibration_and_no_operating_points() -> None:
    format_2 = {**migrate(FORMAT_1), "format": 2}
    for key in ("calibration", "operating_points", "default_operating_point"):
        format_2.pop(key, None)
    meta = CheckpointMeta.from_dict(format_2)
    assert meta.format == FORMAT_VERSION == 3
    assert meta.calibration is None and meta.operating_points == () and meta.default_operating_point is None
    assert meta.decision_threshold == 0.59  # the one threshold stays what it was


def test_calibration_and_operating_points_are_typed_and_round_trip() -> None:
    from cadx.engine.meta import Calibration, OperatingPoint

    points = (OperatingPoint("balanced", 0.6, "youden", sensitivity=0.9, specificity=0.8, n=100),
              OperatingPoint("high-sensitivity", 0.2, "sensitivity", 0.95, 0.96, 0.5, 100))
    meta = CheckpointMeta.from_dict(FORMAT_1).with_changes(
        calibration=Calibration(temperatures=(1.7,), n=100, nll_before=0.4, nll_after=0.3),
        operating_points=points, default_operating_point="balanced", decision_threshold=0.6)
    stored = meta.to_dict()
    buffer = io.BytesIO()
    torch.save(stored, buffer)
    buffer.seek(0)
    again = CheckpointMeta.from_dict(torch.load(buffer, weights_only=True))
    assert again == meta and again.calibration.temperatures == (1.7,)
    assert again.operating_point("high-sensitivity").target == 0.95
    with pytest.raises(CheckpointError, match="default operating point"):
        meta.with_changes(default_operating_point="nope")
    with pytest.raises(CheckpointError, match="positive"):
        Calibration(temperatures=(0.0,))


def test_round_trip_keeps_every_field() -> None:
    meta = CheckpointMeta.from_dict(FORMAT_1).with_changes(title="Kermany", version="v2",
                                                           extensions={"calibration": {"temperature": 1.3}})
    again = CheckpointMeta.from_dict(meta.to_dict())
    assert again == meta
    stored = meta.to_dict()
    buffer = io.BytesIO()
    torch.save(stored, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == stored  # plain types only: the safe loader reads it
    assert stored["format"] == FORMAT_VERSION and isinstance(stored["preprocessing"]["mean"], list)


@pytest.mark.parametrize("name", ["chest_xray_pneumonia", "brain_mri_tumor"])
def test_the_shipped_models_load_through_the_migration(name: str) -> None:
    path = SHIPPED / name / "model.ckpt"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    raw = torch.load(path, map_location="cpu", weights_only=False)["cadx"]
    meta = CheckpointMeta.from_dict(raw)
    assert meta.model.name == "resnet18" and meta.preprocessing.image_size == 128
    assert meta.category in ("Chest X-ray", "Brain MRI")
    assert meta.binary == (name == "chest_xray_pneumonia")


def test_bad_metadata_is_refused_with_a_reason() -> None:
    with pytest.raises(CheckpointError, match="newer than this cadx"):
        CheckpointMeta.from_dict({**FORMAT_1, "format": FORMAT_VERSION + 1})
    with pytest.raises(CheckpointError, match="incomplete"):
        CheckpointMeta.from_dict({"format": FORMAT_VERSION, "classes": ["a"]})
    with pytest.raises(CheckpointError, match="3 class names for a 2-output"):
        CheckpointMeta.from_dict({**FORMAT_1, "classes": ["a", "b", "c"]})
    with pytest.raises(CheckpointError, match="outside"):
        CheckpointMeta.from_dict({**FORMAT_1, "decision_threshold": 1.5})
    with pytest.raises(CheckpointError, match="positive_index"):
        new_meta("simple_cnn", ["a", "b", "c"], Preprocessing(32, 1), positive_index=1)


def test_new_meta_makes_the_second_of_two_classes_the_finding() -> None:
    pre = Preprocessing(32, 1)
    assert new_meta("simple_cnn", ["normal", "pneumonia"], pre).positive_index == 1
    assert new_meta("simple_cnn", ["a", "b", "c"], pre).positive_index is None
    assert new_meta("simple_cnn", ["a", "b"], pre, task="multilabel").positive_index is None
    assert new_meta("simple_cnn", ["a", "b"], pre, num_classes=1).model.num_classes == 1  # single-logit head
