"""Classification metrics with bootstrap confidence intervals (scikit-learn underneath).

For a binary task the headline precision/recall/specificity/F1 are those of the positive class (the finding),
as clinical papers report them; for more classes they are macro averages. ``average`` says which.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

N_BOOTSTRAP = 1000


def predicted_indices(probs: np.ndarray, positive_index: int | None, threshold: float) -> np.ndarray:
    if positive_index is None:
        return probs.argmax(1)
    return np.where(probs[:, positive_index] >= threshold, positive_index, 1 - positive_index)


def _specificity(cm: np.ndarray) -> np.ndarray:
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    tn = cm.sum() - tp - fp - fn
    return tn / np.maximum(tn + fp, 1)


def _auc(y: np.ndarray, probs: np.ndarray, positive_index: int | None) -> float:
    if len(np.unique(y)) < 2:  # a resample or split holding one class only: AUC is undefined
        return float("nan")
    try:
        if positive_index is not None:
            return float(roc_auc_score(y == positive_index, probs[:, positive_index]))
        return float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=range(probs.shape[1])))
    except ValueError:  # classes present in the labels but absent from the scores
        return float("nan")


def choose_threshold(y: np.ndarray, probs: np.ndarray, positive_index: int) -> float:
    """Youden's J (sensitivity + specificity - 1) maximised on validation data."""
    fpr, tpr, thresholds = roc_curve(y == positive_index, probs[:, positive_index])
    best = int(np.argmax(tpr - fpr))
    return float(np.clip(thresholds[best], 0.0, 1.0))


def classification_metrics(y: np.ndarray, probs: np.ndarray, classes: list[str], *,
                           positive_index: int | None = None, threshold: float = 0.5,
                           n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """Everything the evaluation report shows, for single-label tasks."""
    k = len(classes)
    pred = predicted_indices(probs, positive_index, threshold)
    cm = confusion_matrix(y, pred, labels=range(k))
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=range(k), zero_division=0)
    spec = _specificity(cm)
    per_class_auc = [_auc(y == i, np.stack([1 - probs[:, i], probs[:, i]], 1), 1) for i in range(k)]
    per_class = {c: {"precision": float(prec[i]), "recall": float(rec[i]), "specificity": float(spec[i]),
                     "f1": float(f1[i]), "auc": per_class_auc[i], "support": int(support[i])}
                 for i, c in enumerate(classes)}
    wp, wr, wf, _ = precision_recall_fscore_support(y, pred, labels=range(k), average="weighted", zero_division=0)
    if positive_index is not None:
        head = per_class[classes[positive_index]]
        average = f"binary (positive class: {classes[positive_index]})"
    else:
        head = {m: float(np.mean([per_class[c][m] for c in classes])) for m in ("precision", "recall",
                                                                                   "specificity", "f1")}
        average = "macro"
    result = {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(np.mean(rec)),
        "precision": head["precision"], "recall": head["recall"], "specificity": head["specificity"],
        "f1": head["f1"], "auc": _auc(y, probs, positive_index),
        "average": average, "threshold": threshold if positive_index is not None else None,
        "per_class": per_class,
        "weighted": {"precision": float(wp), "recall": float(wr), "f1": float(wf)},
        "confusion_matrix": cm.tolist(),
        "n_images": int(len(y)),
    }
    if positive_index is not None:
        result["accuracy_at_0.5"] = float(accuracy_score(y, predicted_indices(probs, positive_index, 0.5)))
    result["ci"] = bootstrap_ci(y, probs, pred, positive_index, n_bootstrap, seed)
    return result


def bootstrap_ci(y: np.ndarray, probs: np.ndarray, pred: np.ndarray, positive_index: int | None,
                 n: int, seed: int) -> dict[str, list[float]]:
    """Percentile 95 % intervals for accuracy, F1 and AUC over ``n`` seeded resamples of the images."""
    rng = np.random.default_rng(seed)
    k = probs.shape[1]
    scores: dict[str, list[float]] = {"accuracy": [], "f1": [], "auc": []}
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        yy, pp = y[idx], pred[idx]
        scores["accuracy"].append(float(np.mean(yy == pp)))
        if positive_index is not None:
            scores["f1"].append(float(f1_score(yy == positive_index, pp == positive_index, zero_division=0)))
        else:
            scores["f1"].append(float(f1_score(yy, pp, labels=range(k), average="macro", zero_division=0)))
        scores["auc"].append(_auc(yy, probs[idx], positive_index))
    return {m: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for m, v in scores.items()}


def multilabel_metrics(y: np.ndarray, probs: np.ndarray, classes: list[str], *, threshold: float = 0.5,
                       n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """Per-label AUC and thresholded precision/recall/specificity/F1, macro-averaged over labels."""
    pred = (probs >= threshold).astype(int)
    per_class = {}
    for i, c in enumerate(classes):
        cm = confusion_matrix(y[:, i], pred[:, i], labels=[0, 1])
        p, r, f, s = precision_recall_fscore_support(y[:, i], pred[:, i], labels=[1], zero_division=0)
        per_class[c] = {"precision": float(p[0]), "recall": float(r[0]), "specificity": float(_specificity(cm)[1]),
                        "f1": float(f[0]), "auc": _auc(y[:, i], np.stack([1 - probs[:, i], probs[:, i]], 1), 1),
                        "support": int(s[0])}
    macro = {m: float(np.nanmean([per_class[c][m] for c in classes]))
             for m in ("precision", "recall", "specificity", "f1", "auc")}
    rng = np.random.default_rng(seed)
    boot: dict[str, list[float]] = {"accuracy": [], "f1": [], "auc": []}
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(y), len(y))
        boot["accuracy"].append(float(np.mean(y[idx] == pred[idx])))
        boot["f1"].append(float(f1_score(y[idx], pred[idx], average="macro", zero_division=0)))
        aucs = [_auc(y[idx, i], np.stack([1 - probs[idx, i], probs[idx, i]], 1), 1) for i in range(len(classes))]
        boot["auc"].append(float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else float("nan"))
    return {
        "accuracy": float(np.mean(y == pred)), "subset_accuracy": float(np.mean(np.all(y == pred, axis=1))),
        **macro, "average": "macro over labels", "threshold": threshold, "per_class": per_class,
        "confusion_matrix": [confusion_matrix(y[:, i], pred[:, i], labels=[0, 1]).tolist() for i in
                             range(len(classes))],
        "n_images": int(len(y)),
        "ci": {m: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for m, v in boot.items()},
    }
