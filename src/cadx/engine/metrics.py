"""Classification metrics with bootstrap confidence intervals (scikit-learn underneath).

For a binary task the headline precision/recall/specificity/F1 are those of the positive class (the finding),
as clinical papers report them; for more classes they are macro averages. ``average`` says which.
"""

from __future__ import annotations

from collections.abc import Sequence
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

from cadx.engine.decision import decision_indices

N_BOOTSTRAP = 1000
HEADLINE = ("accuracy", "precision", "recall", "specificity", "f1", "auc")
MULTILABEL_CI = ("accuracy", "f1", "auc")  # the multi-label metrics given bootstrap intervals


def _rates(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, specificity and F1 from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(float)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    tn = cm.sum() - tp - fp - fn
    return {"precision": tp / np.maximum(tp + fp, 1), "recall": tp / np.maximum(tp + fn, 1),
            "specificity": tn / np.maximum(tn + fp, 1), "f1": 2 * tp / np.maximum(2 * tp + fp + fn, 1)}


def headline_scores(y: np.ndarray, probs: np.ndarray, pred: np.ndarray,
                    positive_index: int | None) -> dict[str, float]:
    """Accuracy, AUC and the positive class's (binary) or the macro (more classes) precision/recall/specificity/F1."""
    k = probs.shape[1]
    rates = _rates(np.bincount(y * k + pred, minlength=k * k).reshape(k, k))
    pick = (lambda v: float(v[positive_index])) if positive_index is not None else (lambda v: float(v.mean()))
    return {"accuracy": float(np.mean(y == pred)), **{m: pick(v) for m, v in rates.items()},
            "auc": _auc(y, probs, positive_index)}


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
                           n_bootstrap: int = N_BOOTSTRAP, seed: int = 0,
                           pred: np.ndarray | None = None) -> dict[str, Any]:
    """Everything the evaluation report shows, for single-label tasks (``pred``: the decisions already made, else
    the decision rule at ``threshold``)."""
    k = len(classes)
    if pred is None:
        pred = decision_indices(probs, positive_index=positive_index, threshold=threshold)
    cm = confusion_matrix(y, pred, labels=range(k))
    rates = _rates(cm)
    per_class_auc = [_auc(y == i, np.stack([1 - probs[:, i], probs[:, i]], 1), 1) for i in range(k)]
    per_class = {c: {**{m: float(v[i]) for m, v in rates.items()}, "auc": per_class_auc[i],
                     "support": int(cm[i].sum())} for i, c in enumerate(classes)}
    wp, wr, wf, _ = precision_recall_fscore_support(y, pred, labels=range(k), average="weighted", zero_division=0)
    average = "macro" if positive_index is None else f"binary (positive class: {classes[positive_index]})"
    result = {
        **headline_scores(y, probs, pred, positive_index),
        "balanced_accuracy": float(np.mean(rates["recall"])),
        "average": average, "positive_index": positive_index,
        "threshold": threshold if positive_index is not None else None,
        "per_class": per_class,
        "weighted": {"precision": float(wp), "recall": float(wr), "f1": float(wf)},
        "confusion_matrix": cm.tolist(),
        "n_images": int(len(y)),
    }
    if positive_index is not None:
        at_half = decision_indices(probs, positive_index=positive_index, threshold=0.5)
        result["accuracy_at_0.5"] = float(accuracy_score(y, at_half))
    result["ci"] = bootstrap_ci(y, probs, pred, positive_index, n_bootstrap, seed)
    return result


def bootstrap_ci(y: np.ndarray, probs: np.ndarray, pred: np.ndarray, positive_index: int | None,
                 n: int, seed: int) -> dict[str, list[float]]:
    """Percentile 95 % intervals of every headline metric over ``n`` seeded resamples of the images."""
    return mean_bootstrap_ci([(y, probs, pred)], positive_index, n, seed)


def mean_bootstrap_ci(runs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], positive_index: int | None,
                      n: int = N_BOOTSTRAP, seed: int = 0, *, shared_images: bool = True,
                      multilabel: bool = False) -> dict[str, list[float]]:
    """95 % intervals of the mean over several runs (seeds) of each headline metric; runs are (y, probs, pred).

    When the runs were tested on the same images, every resample draws the same images for all of them: the test
    set's sampling noise is shared by the runs and must not be averaged away as if it were independent.
    Multi-label runs (multi-hot y and pred) get intervals for accuracy, macro F1 and macro AUC.
    """
    rng = np.random.default_rng(seed)
    sizes = [len(r[0]) for r in runs]
    if shared_images and len(set(sizes)) != 1:
        raise ValueError("runs on shared images must have the same number of images")
    scores: dict[str, list[float]] = {m: [] for m in (MULTILABEL_CI if multilabel else HEADLINE)}
    for _ in range(n):
        shared = rng.integers(0, sizes[0], sizes[0]) if shared_images else None
        per_run = []
        for (y, probs, pred), size in zip(runs, sizes, strict=True):
            idx = shared if shared is not None else rng.integers(0, size, size)
            per_run.append(_multilabel_scores(y[idx], probs[idx], pred[idx]) if multilabel
                           else headline_scores(y[idx], probs[idx], pred[idx], positive_index))
        for m in scores:
            scores[m].append(float(np.mean([s[m] for s in per_run])))
    return {m: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for m, v in scores.items()}


def _multilabel_scores(y: np.ndarray, probs: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Label-wise accuracy, macro F1 and macro AUC over the labels (labels without both values in y are skipped)."""
    aucs = [_auc(y[:, i], np.stack([1 - probs[:, i], probs[:, i]], 1), 1) for i in range(y.shape[1])]
    return {"accuracy": float(np.mean(y == pred)),
            "f1": float(f1_score(y, pred, average="macro", zero_division=0)),
            "auc": float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else float("nan")}


def multilabel_metrics(y: np.ndarray, probs: np.ndarray, classes: list[str], *, threshold: float = 0.5,
                       n_bootstrap: int = N_BOOTSTRAP, seed: int = 0,
                       pred: np.ndarray | None = None) -> dict[str, Any]:
    """Per-label AUC and thresholded precision/recall/specificity/F1, macro-averaged over labels."""
    if pred is None:
        pred = decision_indices(probs, threshold=threshold, multilabel=True)
    per_class = {}
    for i, c in enumerate(classes):
        cm = confusion_matrix(y[:, i], pred[:, i], labels=[0, 1])
        p, r, f, s = precision_recall_fscore_support(y[:, i], pred[:, i], labels=[1], zero_division=0)
        per_class[c] = {"precision": float(p[0]), "recall": float(r[0]),
                        "specificity": float(_rates(cm)["specificity"][1]),
                        "f1": float(f[0]), "auc": _auc(y[:, i], np.stack([1 - probs[:, i], probs[:, i]], 1), 1),
                        "support": int(s[0])}
    macro = {m: float(np.nanmean([per_class[c][m] for c in classes]))
             for m in ("precision", "recall", "specificity", "f1", "auc")}
    return {
        "accuracy": float(np.mean(y == pred)), "subset_accuracy": float(np.mean(np.all(y == pred, axis=1))),
        **macro, "average": "macro over labels", "threshold": threshold, "per_class": per_class,
        "confusion_matrix": [confusion_matrix(y[:, i], pred[:, i], labels=[0, 1]).tolist() for i in
                             range(len(classes))],
        "n_images": int(len(y)),
        "ci": mean_bootstrap_ci([(y, probs, pred)], None, n_bootstrap, seed, multilabel=True),
    }
