"""Fitting a checkpoint's calibration and operating points on its own validation split, after training and by
``cadx calibrate`` for existing checkpoints: temperature scaling first, then the operating points on the CALIBRATED
validation probabilities, so that a named threshold means the same probability the card shows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cadx.data.cache import DecodedImages, decode_records
from cadx.data.sources import DatasetError
from cadx.engine.calibration import apply, fit_calibration
from cadx.engine.checkpoint import load_checkpoint, update_meta
from cadx.engine.inference import Predictor
from cadx.engine.meta import DEFAULT_THRESHOLD, Calibration, CheckpointMeta, OperatingPoint
from cadx.engine.operating_points import BALANCED, DEFAULT_TARGET, choose_operating_points
from cadx.engine.selection import select_records

MIN_CALIBRATION_IMAGES = 20  # fewer validation images than this: no temperature is fitted (identity)


@dataclass(frozen=True)
class Fitted:
    calibration: Calibration | None
    operating_points: tuple[OperatingPoint, ...]
    default: str | None
    notes: tuple[str, ...] = ()

    def changes(self, meta: CheckpointMeta) -> dict[str, Any]:
        """The metadata fields to write: decision_threshold stays the default operating point's threshold, so code
        that reads only that field decides as before."""
        out: dict[str, Any] = {"calibration": self.calibration, "operating_points": self.operating_points,
                               "default_operating_point": self.default}
        if meta.binary:
            point = next((p for p in self.operating_points if p.name == self.default), None)
            out["decision_threshold"] = point.threshold if point else DEFAULT_THRESHOLD
            out["threshold_source"] = point.source if point else "default (" + "; ".join(self.notes) + ")"
        return out


def fit_on_validation(predictor: Predictor, val: DecodedImages, *, target_sensitivity: float = DEFAULT_TARGET,
                      target_specificity: float = DEFAULT_TARGET, default: str = BALANCED,
                      fitted_on: str = "validation") -> Fitted:
    """Temperature(s) on the validation logits, then (binary) the operating points on the calibrated validation
    probabilities; ``default`` names the operating point that becomes the decision threshold."""
    meta = predictor.meta
    records = val.records
    notes = []
    y = np.array([r.target for r in records])
    logits = predictor.logits_arrays(val.images)
    calibration = None
    if len(records) >= MIN_CALIBRATION_IMAGES:
        calibration = fit_calibration(logits, y, meta, fitted_on=fitted_on)
    else:
        notes.append(f"not calibrated: {len(records)} validation images, fewer than {MIN_CALIBRATION_IMAGES}")
    if not meta.binary:
        return Fitted(calibration, (), None, tuple(notes))
    probs = apply(logits, meta.with_changes(calibration=calibration))
    if len(np.unique(y)) < 2:
        notes.append("no operating points: the validation split holds one class")
        return Fitted(calibration, (), None, tuple(notes))
    points = choose_operating_points(y, probs, meta.positive_index, target_sensitivity=target_sensitivity,
                                     target_specificity=target_specificity)
    if default not in {p.name for p in points}:
        raise ValueError(f"unknown operating point {default!r}; choose one of {', '.join(p.name for p in points)}")
    return Fitted(calibration, points, default, tuple(notes))


def calibrate_checkpoint(checkpoint: str | Path, data: str | Path | None = None, *, split: str = "val",
                         target_sensitivity: float = DEFAULT_TARGET, target_specificity: float = DEFAULT_TARGET,
                         default: str = BALANCED, batch_size: int = 64) -> tuple[Path, CheckpointMeta, Fitted]:
    """Refit an existing checkpoint's calibration and operating points on its own validation split (or ``data``'s
    ``split``) and write them into the checkpoint (``cadx calibrate``)."""
    predictor = Predictor(load_checkpoint(checkpoint))
    index, records = select_records(predictor.checkpoint, data, split)
    val = decode_records(index, records, predictor.pre, description=f"Decoding {split} images (calibration)")
    if not val.records:
        raise DatasetError(f"{index.source}: none of the {len(records)} {split} images could be read")
    source = "validation" if data is None else f"{split} split of {index.source}"
    fitted = fit_on_validation(predictor, val, target_sensitivity=target_sensitivity,
                               target_specificity=target_specificity, default=default, fitted_on=source)
    if fitted.calibration is None:
        raise DatasetError(f"{predictor.checkpoint.path}: {fitted.notes[0]}")
    meta = update_meta(predictor.checkpoint.path, **fitted.changes(predictor.meta))
    return predictor.checkpoint.path, meta, fitted
