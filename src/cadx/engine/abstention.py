"""Fitting a predictor's out-of-distribution score on its own splits, and what evaluation reports about the images
a model declined to assess (abstention counts, metrics on the assessed images, the selective-prediction view)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from cadx.data.cache import DecodedImages
from cadx.engine.decision import Decision
from cadx.engine.inference import Predictor
from cadx.engine.ood import (
    DEFAULT_KEEP,
    DEFAULT_METHOD,
    MAX_FIT_IMAGES,
    Features,
    OodModel,
    fit_ood,
)

# A 99 % quantile of validation scores needs a few hundred images to mean anything; below this many the score is not
# fitted (the model then abstains on input quality and scope only) and the run's summary says so.
MIN_VALIDATION_IMAGES = 100
COVERAGES = (1.0, 0.95, 0.9, 0.8, 0.7, 0.5)


def logits_features(predictor: Predictor, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, Features]:
    parts = [predictor.logits_and_features(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return np.concatenate([lg for lg, _ in parts]), {k: np.concatenate([f[k] for _, f in parts]) for k in parts[0][1]}


def fit_predictor_ood(predictor: Predictor, train: DecodedImages, val: DecodedImages, *,
                      method: str = DEFAULT_METHOD, keep: float = DEFAULT_KEEP, seed: int = 0) -> OodModel | None:
    """The score fitted on the training images (a seeded sample of at most ``MAX_FIT_IMAGES``), its threshold on
    the validation images; None when validation is too small to place the threshold."""
    if len(val.records) < MIN_VALIDATION_IMAGES:
        return None
    pick = np.arange(len(train.records))
    if len(pick) > MAX_FIT_IMAGES:
        pick = np.sort(np.random.default_rng(seed).choice(pick, MAX_FIT_IMAGES, replace=False))
    logits, features = logits_features(predictor, train.images[pick])  # un-augmented images, as decoded
    targets = np.array([train.records[i].target for i in pick], dtype=object)
    if not predictor.meta.multilabel:
        targets = targets.astype(int)
    return fit_ood((logits, features, targets), logits_features(predictor, val.images), method=method, keep=keep,
                   multilabel=predictor.meta.multilabel)


def abstention_summary(decisions: list[Decision]) -> dict[str, Any]:
    """How many images were not assessed, and why (reasons grouped by their kind: the text before the first '(' or
    ':', e.g. "outside the model's scope")."""
    declined = [d for d in decisions if not d.assessed]
    kinds = Counter((d.reason or "").split(" (")[0].split(";")[0].split(":")[0].strip() for d in declined)
    return {"n": len(declined), "rate": len(declined) / max(len(decisions), 1), "by_reason": dict(kinds.most_common())}


def selective_view(y: np.ndarray, probs: np.ndarray, pred: np.ndarray, positive_index: int | None = None,
                   threshold: float | None = None) -> list[dict[str, float]]:
    """Accuracy when only the most confident share of the images is kept (single-label): the risk-coverage view.
    Confidence is the decision's margin: |p(positive) - threshold| for a binary model, else the top probability."""
    if y.ndim != 1 or not len(y):
        return []
    if positive_index is not None and threshold is not None:
        confidence = np.abs(probs[:, positive_index] - threshold)
    else:
        confidence = probs.max(axis=1)
    order = np.argsort(-confidence, kind="stable")
    correct = (pred == y)[order]
    rows = []
    for coverage in COVERAGES:
        n = max(1, int(round(coverage * len(y))))
        rows.append({"coverage": coverage, "n": n, "accuracy": float(correct[:n].mean())})
    return rows
