"""``cadx train --folds K``: K-fold cross-validation over near-duplicate groups, then one final model.

A small set's own test split is a few dozen images from a handful of scans: its accuracy can land anywhere in a wide
interval, and one lucky or unlucky split decides what the user believes (issue 20: a lung CT model scored 0.84 on
validation and 0.53 on test of one grouped split). K-fold tests every image once, by a model that never saw its
group (patient, byte-identical copies, near-duplicates and numbered neighbouring slices, ``cadx.data.splits``):

* each fold trains a normal run (``folds/fold_<k>/``: its own train/validation split of the other folds, early
  stopping, calibration, operating points and out-of-distribution score on that validation) and is evaluated on the
  held-out fold (``cadx.engine.evaluation``);
* ``cv_metrics.json``: every fold's figures, their mean with a 95 % t-interval over folds, and the pooled
  out-of-fold predictions' metrics with bootstrap intervals;
* the final model (``best.ckpt`` at the top of the run folder, what ``cadx predict`` uses) is trained on every image
  outside a test split the data itself gives, less the validation share it needs for early stopping, calibration and
  the out-of-distribution limit. Its quality is the cross-validated estimate; it has no test split of its own
  unless the data gives one (then it is evaluated there too).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cadx.data.sources import DatasetError, DatasetIndex, load_index
from cadx.data.splits import assign_folds, write_split_file
from cadx.engine.config import TrainConfig
from cadx.engine.decision import decision_indices
from cadx.engine.metrics import HEADLINE, classification_metrics
from cadx.engine.training import TrainResult, train

log = logging.getLogger(__name__)
FOLD_FIGURES = (*HEADLINE, "balanced_accuracy")
# Below this many images, cross-validation is on by default: a 10 % test split then holds under 100 images, and the
# 95 % interval of an accuracy near 0.85 measured on it is at least +-0.07 (1.96 * sqrt(0.85 * 0.15 / 100)); tested
# out of fold, all 1,000 give +-0.022. The price is K + 1 trainings, affordable on sets this small.
SMALL_SET_IMAGES = 1000
DEFAULT_FOLDS = 5


def obstacle(index: DatasetIndex, config: TrainConfig) -> str | None:
    """Why this data and configuration cannot be cross-validated, else None."""
    if index.multilabel:
        return "cross-validation is for single-label data (one class per image)"
    if config.devices != 1 or config.num_nodes != 1:
        return "cross-validation trains its folds one after another on one device"
    return None


def plan_folds(index: DatasetIndex, config: TrainConfig) -> tuple[int, str]:
    """``cadx train``'s choice for this data: :func:`choose_folds` with what stands in the way, if anything."""
    return choose_folds(len(index.records), len(index.classes), config.folds, obstacle=obstacle(index, config))


def choose_folds(images: int, classes: int, requested: int | None, *,
                 obstacle: str | None = None) -> tuple[int, str]:
    """How many folds ``cadx train`` runs, and the one line that tells the user what was chosen and how to change
    it. ``obstacle``: why cross-validation cannot run here; then it is off unless asked for (and refused there)."""
    if requested is not None:
        chosen = requested
        why = "as asked"
    elif obstacle is not None:
        chosen = 1
        why = obstacle
    elif images < SMALL_SET_IMAGES:
        chosen = DEFAULT_FOLDS
        why = f"a small set (under {SMALL_SET_IMAGES:,} images)"
    else:
        chosen = 1
        why = f"{SMALL_SET_IMAGES:,} images or more: one train/validation/test split"
    plan = (f"{chosen}-fold cross-validation over patient and near-duplicate groups, then a final model on all the "
            "images" if chosen > 1 else "no cross-validation")
    change = "--folds 1 to train once" if chosen > 1 else f"--folds {DEFAULT_FOLDS} to cross-validate"
    return chosen, f"{images:,} images in {classes} classes, {why}: {plan} (change with {change})"


@dataclass
class CrossValidation:
    output: Path
    folds: list[dict[str, Any]]  # per fold: its figures on the held-out fold
    summary: dict[str, Any]  # mean and t-interval over folds, pooled out-of-fold metrics
    final: TrainResult
    final_test: dict[str, Any] | None  # the final model on the data's own test split, when it gives one


def t_interval(values: list[float]) -> list[float] | None:
    """95 % Student-t interval of the mean over folds (None for fewer than two finite values)."""
    from scipy import stats

    v = np.asarray(_finite(values), dtype=float)
    if len(v) < 2:
        return None
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return [float(v.mean() - half), float(v.mean() + half)]


def _out_of_fold(fold_dir: Path, classes: list[str], positive_index: int | None,
                 threshold: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The held-out fold's targets, probabilities and decisions (counted as if assessed, like the headline
    metrics of ``cadx evaluate``) from its predictions.csv."""
    with (fold_dir / "predictions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    y = np.array([int(r["target"]) for r in rows], dtype=int)
    probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows], dtype=float)
    pred = decision_indices(probs, positive_index=positive_index, threshold=threshold if threshold is not None
                            else 0.5)
    return y, probs, pred


def cross_validate(data: str | Path, config: TrainConfig, output: str | Path, folds: int, *,
                   overwrite: bool = False, n_bootstrap: int = 1000,
                   index: DatasetIndex | None = None) -> CrossValidation:
    """K-fold over groups, then the final model; writes ``folds/``, ``cv_metrics.json`` and the final run.
    ``index``: ``data`` already loaded (``cadx train`` loads it to choose the folds)."""
    from cadx.engine.evaluation import evaluate

    output = Path(output).expanduser().resolve()
    if (output / "best.ckpt").exists() and not overwrite:
        raise DatasetError(f"{output} already holds a run (best.ckpt); pass --overwrite to start again")
    index = index or load_index(data, patient_pattern=config.patient_pattern)
    problem = obstacle(index, config)
    if problem:
        raise DatasetError(f"{index.source}: {problem}; train with --folds 1")
    split_seed = config.seed if config.split_seed is None else config.split_seed
    plan, warnings = assign_folds(index, folds, seed=split_seed, val_fraction=config.val_fraction,
                                  drop_duplicates=config.drop_duplicates,
                                  near_duplicates=config.near_duplicates or None)
    for w in warnings:
        log.warning(w)
    output.mkdir(parents=True, exist_ok=True)
    per_fold, pooled = [], []
    positive_index = None
    for k, splits in enumerate(plan.folds, start=1):
        fold_dir = output / "folds" / f"fold_{k}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        write_split_file(fold_dir / "split.csv", splits)  # the run replays it, and keeps it as its split.csv
        log.info("fold %d of %d: train %d, validation %d, held out %d images", k, folds, len(splits["train"]),
                 len(splits["val"]), len(splits["test"]))
        result = train(data, config, fold_dir, overwrite=True, split_file=fold_dir / "split.csv")
        m = evaluate(result.best_checkpoint, split="test", output=fold_dir / "held_out", n_bootstrap=n_bootstrap,
                     backend="torch")
        per_fold.append({"fold": k, "images": m["n_images"], "epochs": result.epochs_run,
                         **{f: m.get(f) for f in FOLD_FIGURES},
                         "not_assessed": m["abstention"]["n"],
                         "class_counts": {c: int(s["support"]) for c, s in m["per_class"].items()}})
        positive_index = m.get("positive_index")
        pooled.append(_out_of_fold(fold_dir / "held_out", index.classes, positive_index, m.get("threshold")))
    y, probs, pred = (np.concatenate(parts) for parts in zip(*pooled, strict=True))
    pooled_metrics = classification_metrics(y, probs, index.classes, positive_index=positive_index,
                                            n_bootstrap=n_bootstrap, seed=config.seed, pred=pred)
    summary = {
        "folds": folds, "data": str(index.source), "images_cross_validated": int(len(y)),
        "groups": plan.groups, "held_out_test_images": len(plan.final["test"]),
        "mean_over_folds": {f: _mean([r[f] for r in per_fold]) for f in FOLD_FIGURES},
        "ci_over_folds": {f: t_interval([r[f] for r in per_fold]) for f in FOLD_FIGURES},
        "pooled_out_of_fold": {k: pooled_metrics[k] for k in (*FOLD_FIGURES, "per_class", "confusion_matrix",
                                                              "ci", "n_images")},
        "per_fold": per_fold, "warnings": warnings,
        "final_model": "trained on every image outside the data's own test split, less its validation share "
                       f"({100 * config.val_fraction:g} %: early stopping, calibration, out-of-distribution limit)",
    }
    write_split_file(output / "split.csv", plan.final)
    final = train(data, config, output, overwrite=True, split_file=output / "split.csv")
    final_test = None
    if plan.final["test"]:
        final_test = evaluate(final.best_checkpoint, split="test", output=output / "test", n_bootstrap=n_bootstrap,
                              backend="torch")
        summary["final_model_on_test"] = {f: final_test.get(f) for f in FOLD_FIGURES}
    (output / "cv_metrics.json").write_text(json.dumps(summary, indent=2))
    return CrossValidation(output, per_fold, summary, final, final_test)


def _finite(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None and np.isfinite(v)]


def _mean(values: list[float | None]) -> float | None:
    finite = _finite(values)
    return float(np.mean(finite)) if finite else None
