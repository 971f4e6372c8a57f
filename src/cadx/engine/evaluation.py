"""``cadx evaluate``: a checkpoint on a split (or any labelled data), written as metrics.json + report.md + plots."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_curve

from cadx.data.cache import DecodedImages, decode_records
from cadx.data.sources import DatasetError, Record
from cadx.engine.abstention import abstention_summary, selective_view
from cadx.engine.backends import load_predictor
from cadx.engine.calibration import paired_calibration_scores, reliability_bins, top_label
from cadx.engine.checkpoint import LoadedCheckpoint
from cadx.engine.decision import Decision, decide_all, resolve_operating_point
from cadx.engine.inference import EnsemblePredictor, Predictor
from cadx.engine.meta import DEFAULT_THRESHOLD, VALIDATION_SOURCE, CheckpointMeta, OperatingPoint
from cadx.engine.metrics import choose_threshold, classification_metrics, multilabel_metrics
from cadx.engine.operating_points import DEFAULT_TARGET, choose_operating_points, operating_point_figures
from cadx.engine.plots import plot_confusion_matrix, plot_reliability, plot_risk_coverage, plot_roc
from cadx.engine.report import write_report
from cadx.engine.selection import select_records
from cadx.engine.uncertainty import risk_coverage, uncertainty_summary
from cadx.models import count_parameters


def measure_latency(predictor: Predictor, batch_size: int, repeats: int = 30) -> dict[str, Any]:
    """Mean and p95 milliseconds per image at batch 1 and at the evaluation batch size (model forward only)."""
    pre = predictor.pre
    result: dict[str, Any] = {"device": str(predictor.device), "torch_threads": torch.get_num_threads(),
                              "image_size": pre.image_size}
    for label, n in (("batch_1", 1), (f"batch_{batch_size}", batch_size)):
        x = np.random.default_rng(0).integers(0, 256, (n, pre.channels, pre.image_size, pre.image_size),
                                              dtype=np.uint8)
        for _ in range(5):  # the first calls build oneDNN kernels; they are not steady-state cost
            predictor.predict_batch(x)
        times = []
        for _ in range(repeats if n == 1 else max(3, repeats // 3)):
            start = time.perf_counter()
            predictor.predict_batch(x)
            if predictor.device.type == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - start) * 1000 / n)
        result[label] = {"mean": float(np.mean(times)), "p95": float(np.percentile(times, 95)), "batch_size": n}
    return result


def evaluate(checkpoint: str | Path | Sequence[str | Path], data: str | Path | None = None, *, split: str = "test",
             output: str | Path | None = None, batch_size: int = 64, threshold: float | None = None,
             n_bootstrap: int = 1000, device: str | None = None, tta: bool = False,
             operating_point: str | None = None, target_sensitivity: float | None = None,
             target_specificity: float | None = None, flip_check: bool = True,
             backend: str = "torch") -> dict[str, Any]:
    """One checkpoint, or several averaged (an ensemble), optionally with flip test-time augmentation.

    An ensemble or TTA changes the output, so its binary threshold is chosen again by Youden's J on the members'
    shared validation split, never on the data being evaluated. ``operating_point``: decide at that stored
    operating point; ``target_sensitivity``/``target_specificity``: choose the operating points again on the
    validation split for these targets (reported beside the stored ones' place). ``flip_check``: a second pass on
    the mirrored images, for the uncertainty flag (not with ``tta``, whose output already averages the mirror).
    ``backend``: which engine runs each member (``cadx.engine.backends``; ``auto``: its fastest verified copy).
    """
    paths = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    members = [load_predictor(p, backend, device) for p in paths]
    averaged = len(members) > 1 or tta
    predictor = EnsemblePredictor(members, flip=tta) if averaged else members[0]
    ckpt = predictor.checkpoint
    if averaged and operating_point is not None:
        raise ValueError("an ensemble or TTA output has no stored operating points; give --threshold instead")
    if averaged and threshold is None and predictor.meta.binary:
        _check_shared_split(members, "val")
    if averaged and data is None and split != "all":
        _check_shared_split(members, split)
    index, records = select_records(ckpt, data, split)
    decoded = decode_records(index, records, predictor.pre, description=f"Decoding {split} images",
                             check=lambda image, path: predictor.input_problem(path, image))
    if not decoded.records:
        raise DatasetError(f"{index.source}: none of the {len(records)} images could be read")
    probs, scores = predictor.predict_arrays_scored(decoded.images, batch_size)
    calibrated = any(m.meta.calibration is not None for m in members)
    raw = predictor.predict_arrays(decoded.images, batch_size, calibrated=False) if calibrated else probs
    flipped = predictor.predict_arrays_flipped(decoded.images, batch_size) if flip_check and not tta else None
    reasons = [problem or ood for problem, ood in zip(decoded.problems or [None] * len(probs),
                                                      predictor.ood_reasons(scores, len(probs)), strict=True)]
    y = np.array([r.target for r in decoded.records])
    meta = predictor.meta
    if threshold is None and averaged and meta.binary:
        # An average is a new model: its operating point is chosen again on validation, never on this data.
        own_val = split == "val" and data is None  # these are the validation outputs already
        chosen, source = ((choose_threshold(y, probs, meta.positive_index), VALIDATION_SOURCE) if own_val
                          else validation_threshold(predictor, batch_size=batch_size))
        threshold, given_by = chosen, f"{source} of the averaged output, at evaluation"
    else:
        given_by = "given"
    t, threshold_source, point_name = resolve_operating_point(meta, threshold, given_by, operating_point)
    # The headline metrics count every image as if it were assessed (comparable with earlier runs and papers);
    # the decisions written per image, and the assessed-only metrics, leave out the images the model declined.
    chosen = {"operating_point": operating_point, "flipped": flipped}
    as_if_assessed = decide_all(probs, meta, threshold, given_by, **chosen)
    decisions = decide_all(probs, meta, threshold, given_by, reasons=reasons, **chosen)
    metrics = _metrics(y, probs, as_if_assessed, meta, t, n_bootstrap)
    metrics["operating_point"] = point_name if meta.binary else None
    metrics.update(_calibration_section(y, raw, probs, members, meta, n_bootstrap))
    points = _operating_points(predictor, averaged, target_sensitivity, target_specificity, batch_size)
    if meta.binary and points:
        default = meta.default_operating_point if not (averaged or target_sensitivity or target_specificity) else None
        metrics["operating_points"] = operating_point_figures(y, probs, meta.positive_index, points,
                                                              point_name or default, n_bootstrap=n_bootstrap)
    correct = _correct(y, _indices(as_if_assessed, meta), meta)
    metrics["uncertainty"] = uncertainty_summary(correct, decisions, n_bootstrap=n_bootstrap)
    metrics["uncertainty"]["flip_check"] = flipped is not None
    if not meta.multilabel:
        confidence = np.array([p[d.indices[0]] for p, d in zip(probs, as_if_assessed, strict=True)])
        metrics["risk_coverage"] = risk_coverage(correct, confidence)
    kept = np.array([d.assessed for d in decisions])
    metrics["abstention"] = abstention_summary(decisions)
    metrics["assessed_only"] = (_metrics(y[kept], probs[kept], [d for d in decisions if d.assessed], meta, t,
                                         n_bootstrap) if kept.any() else None)
    if not meta.multilabel:
        metrics["selective"] = selective_view(y, probs, _indices(as_if_assessed, meta), meta.positive_index,
                                              t if meta.binary else None)
    metrics.update({
        "classes": ckpt.classes, "task": meta.task,
        "threshold_source": threshold_source if (meta.binary or meta.multilabel) else None,
        "params": sum(count_parameters(m.model) for m in members),
        "latency_ms": measure_latency(predictor, batch_size),
        "model": " + ".join(m.meta.model.name for m in members) + (" (flip TTA)" if tta else ""),
        "backend": " + ".join(sorted({m.backend for m in members})),
        "checkpoint": str(ckpt.path), "data": str(index.source),
        "split": split, "image_size": predictor.pre.image_size,
        "skipped_files": [{"file": f, "reason": r} for f, r in decoded.skipped],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    if averaged:
        metrics["ensemble"] = {"checkpoints": [str(m.checkpoint.path) for m in members], "tta": "flip" if tta else None,
                               "threshold_source": threshold_source}
    out = Path(output) if output else ckpt.path.parent
    out.mkdir(parents=True, exist_ok=True)
    _write_outputs(out, metrics, y, probs, decisions, decoded.records, ckpt)
    if metrics.get("reliability"):
        plot_reliability(metrics["reliability"], out / "reliability.png",
                         f"{metrics['model']} on {split} (n={metrics['n_images']})")
    if metrics.get("risk_coverage", {}).get("aurc") is not None:
        plot_risk_coverage(metrics["risk_coverage"], out / "risk_coverage.png")
    return metrics


def _correct(y: np.ndarray, pred: np.ndarray, meta: CheckpointMeta) -> np.ndarray:
    """Per image: the decision is right (multi-label: every label right)."""
    return np.all(y == pred, axis=1) if meta.multilabel else y == pred


def _calibration_section(y: np.ndarray, raw: np.ndarray, probs: np.ndarray, members: list[Predictor],
                         meta: CheckpointMeta, n_bootstrap: int) -> dict[str, Any]:
    """ECE, Brier and NLL before and after calibration (paired bootstrap intervals), the calibrated ones also at
    the top level, and the reliability diagram's bins (top-label; multi-label: every label's p against its
    presence, pooled)."""
    multilabel = meta.multilabel
    scores = paired_calibration_scores(y, {"uncalibrated": raw, "calibrated": probs}, multilabel,
                                       n_bootstrap=n_bootstrap)
    fits = [m.meta.calibration for m in members]
    section: dict[str, Any] = {
        "calibration": {
            "applied": any(f is not None for f in fits),
            "method": "temperature scaling" if any(fits) else None,
            "temperatures": [list(f.temperatures) if f else None for f in fits],
            "fitted_on": [f.fitted_on if f else None for f in fits],
            "bins": 15, "ece_kind": "per label, averaged" if multilabel else "top-label",
            **scores,
        },
        **{k: scores["calibrated"][k] for k in ("ece", "brier", "nll")},
    }

    def bins(p: np.ndarray) -> dict[str, list]:
        if multilabel:
            return reliability_bins(p.ravel(), y.ravel().astype(bool))
        return reliability_bins(*top_label(y, p))

    section["reliability"] = {"uncalibrated": bins(raw), "calibrated": bins(probs)}
    return section


def _operating_points(predictor: Predictor, averaged: bool, target_sensitivity: float | None,
                      target_specificity: float | None, batch_size: int) -> tuple[OperatingPoint, ...]:
    """The stored operating points of a single checkpoint; chosen again on the validation split (calibrated
    output) when targets are given."""
    meta = predictor.meta
    if not meta.binary:
        return ()
    if target_sensitivity is None and target_specificity is None:
        return () if averaged else meta.operating_points
    index, records = select_records(predictor.checkpoint, None, "val")
    val = decode_records(index, records, predictor.pre, description="Decoding val images (operating points)")
    yv = np.array([r.target for r in val.records])
    if len(np.unique(yv)) < 2:
        return ()
    return choose_operating_points(yv, predictor.predict_arrays(val.images, batch_size), meta.positive_index,
                                   target_sensitivity=target_sensitivity or DEFAULT_TARGET,
                                   target_specificity=target_specificity or DEFAULT_TARGET)


def _indices(decisions: list[Decision], meta: CheckpointMeta) -> np.ndarray:
    """The decisions as the metrics count them: class indices, or a multi-hot matrix for multi-label tasks."""
    if meta.multilabel:
        return np.array([np.isin(range(len(meta.classes)), d.indices) for d in decisions], dtype=int)
    return np.array([d.indices[0] for d in decisions], dtype=int)


def _metrics(y: np.ndarray, probs: np.ndarray, decisions: list[Decision], meta: CheckpointMeta, t: float,
             n_bootstrap: int) -> dict[str, Any]:
    pred = _indices(decisions, meta)
    if meta.multilabel:
        return multilabel_metrics(y, probs, list(meta.classes), threshold=t, n_bootstrap=n_bootstrap, pred=pred)
    return classification_metrics(y, probs, list(meta.classes), positive_index=meta.positive_index, threshold=t,
                                  n_bootstrap=n_bootstrap, pred=pred)


def _check_shared_split(members: list[Predictor], split: str) -> None:
    """Averaged members must agree on a split, or one member's validation/test images are another's training."""
    reference = set(members[0].meta.split.get(split, ()))
    for m in members[1:]:
        if set(m.meta.split.get(split, ())) != reference:
            raise DatasetError(f"{m.checkpoint.path}: its '{split}' split differs from {members[0].checkpoint.path}'s"
                               "; train ensemble members on one split (cadx train --split-seed or --split-file)")


def validation_threshold(predictor: Predictor, val: DecodedImages | None = None, *,
                         batch_size: int = 64) -> tuple[float, str]:
    """The one place a binary operating point is chosen, with where it came from: Youden's J of the predictor's
    (averaged) output on its checkpoint's own validation split (``val`` when the caller decoded it already), never
    on test data. Other tasks, and a validation split holding one class, keep the default."""
    if not predictor.meta.binary:
        return DEFAULT_THRESHOLD, "default"
    if val is None:
        index, records = select_records(predictor.checkpoint, None, "val")
        val = decode_records(index, records, predictor.pre, description="Decoding val images (threshold)")
    y = np.array([r.target for r in val.records])
    if len(np.unique(y)) < 2:
        return DEFAULT_THRESHOLD, "default (the validation split holds one class)"
    probs = predictor.predict_arrays(val.images, batch_size)
    return choose_threshold(y, probs, predictor.meta.positive_index), VALIDATION_SOURCE


def target_cell(target: int | tuple[int, ...], classes: list[str]) -> str | int:
    """predictions.csv's target: the class index, or a multi-label image's labels as the manifest writes them."""
    if isinstance(target, int):
        return target
    return "|".join(c for c, v in zip(classes, target, strict=True) if v)


def _write_outputs(out: Path, metrics: dict[str, Any], y: np.ndarray, probs: np.ndarray, decisions: list[Decision],
                   records: list[Record], ckpt: LoadedCheckpoint) -> None:
    classes = ckpt.classes
    multilabel = ckpt.meta.multilabel
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    with (out / "predictions.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        # decision: the finding(s) asserted at the evaluation's threshold, '|'-joined as a manifest writes labels
        # (empty when the image was not assessed; reason says why)
        writer.writerow(["file", "target", "decision", "assessed", "reason", "uncertain", "uncertain_reason",
                         *[f"p_{c}" for c in classes]])
        for r, p, d in zip(records, probs, decisions, strict=True):
            writer.writerow([r.key, target_cell(r.target, classes), d.cell, int(d.assessed), d.reason or "",
                             int(d.uncertain), d.uncertain_reason or "", *[f"{v:.6f}" for v in p]])
    if not multilabel:
        cm = np.array(metrics["confusion_matrix"])
        plot_confusion_matrix(cm, classes, out / "confusion_matrix.png",
                              f"{metrics['model']} on {metrics['split']} (n={metrics['n_images']})")
        with (out / "confusion_matrix.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["true \\ predicted", *classes])
            for c, row in zip(classes, cm, strict=True):
                writer.writerow([c, *row])
    curves, point = {}, None
    onehot = y if multilabel else np.eye(len(classes), dtype=int)[y]
    positive = ckpt.meta.positive_index
    indices = [positive] if positive is not None else range(len(classes))
    for i in indices:
        if 0 < onehot[:, i].sum() < len(onehot):
            fpr, tpr, _ = roc_curve(onehot[:, i], probs[:, i])
            curves[classes[i]] = (fpr, tpr, metrics["per_class"][classes[i]]["auc"])
    if positive is not None:
        point = (1 - metrics["specificity"], metrics["recall"])
    if curves:
        plot_roc(curves, out / "roc.png", point)
    write_report(out / "report.md", metrics)
