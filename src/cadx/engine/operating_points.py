"""Named operating points of a binary model, chosen on its (calibrated) validation probabilities: ``balanced``
(Youden's J), ``high-sensitivity`` and ``high-specificity`` (a target met on validation), and their sensitivity and
specificity on other data with bootstrap intervals drawn as ``cadx.engine.metrics`` draws them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cadx.engine.meta import OperatingPoint
from cadx.engine.metrics import N_BOOTSTRAP, choose_threshold

BALANCED = "balanced"
HIGH_SENSITIVITY = "high-sensitivity"
HIGH_SPECIFICITY = "high-specificity"
DEFAULT_TARGET = 0.95  # the sensitivity / specificity asked of the two target operating points unless given


def sensitivity_specificity(positive: np.ndarray, score: np.ndarray, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity of ``score >= threshold`` (NaN where a class is absent)."""
    called = score >= threshold
    pos, neg = positive.astype(bool), ~positive.astype(bool)
    sens = float(called[pos].mean()) if pos.any() else float("nan")
    spec = float((~called[neg]).mean()) if neg.any() else float("nan")
    return sens, spec


def threshold_for_sensitivity(positive: np.ndarray, score: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity (score >= threshold among positives) is at least ``target``."""
    pos = np.sort(score[positive.astype(bool)])[::-1]
    if not len(pos):
        raise ValueError("no positive images to meet a sensitivity on")
    k = max(1, math.ceil(target * len(pos) - 1e-9))  # positives that must be called
    return float(pos[k - 1])


def threshold_for_specificity(positive: np.ndarray, score: np.ndarray, target: float) -> float:
    """The lowest threshold whose specificity (score < threshold among negatives) is at least ``target``: just
    above the score of the last negative that must be cleared (midway to the next higher score, if any)."""
    neg = np.sort(score[~positive.astype(bool)])
    if not len(neg):
        raise ValueError("no negative images to meet a specificity on")
    m = max(1, math.ceil(target * len(neg) - 1e-9))  # negatives that must fall below the threshold
    edge = float(neg[m - 1])
    above = score[score > edge]
    t = (edge + float(above.min())) / 2 if len(above) else float(np.nextafter(edge, np.inf))
    return float(min(t, 1.0))


def choose_operating_points(y: np.ndarray, probs: np.ndarray, positive_index: int, *,
                            target_sensitivity: float = DEFAULT_TARGET,
                            target_specificity: float = DEFAULT_TARGET) -> tuple[OperatingPoint, ...]:
    """The three operating points on validation labels ``y`` and (calibrated) probabilities ``probs``."""
    for name, v in (("target sensitivity", target_sensitivity), ("target specificity", target_specificity)):
        if not 0.0 < v <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {v}")
    positive = np.asarray(y) == positive_index
    score = np.asarray(probs)[:, positive_index]
    balanced = choose_threshold(np.asarray(y), probs, positive_index)
    # A "high-sensitivity" point is never less sensitive than the balanced one (nor "high-specificity" less
    # specific): where Youden's J already meets the target, the named point keeps the balanced threshold.
    chosen = [(BALANCED, balanced, "youden", None),
              (HIGH_SENSITIVITY, min(balanced, threshold_for_sensitivity(positive, score, target_sensitivity)),
               "sensitivity", target_sensitivity),
              (HIGH_SPECIFICITY, max(balanced, threshold_for_specificity(positive, score, target_specificity)),
               "specificity", target_specificity)]
    points = []
    for name, t, criterion, target in chosen:
        sens, spec = sensitivity_specificity(positive, score, t)
        points.append(OperatingPoint(name=name, threshold=float(np.clip(t, 0.0, 1.0)), criterion=criterion,
                                     target=target, sensitivity=sens, specificity=spec, n=int(len(y))))
    return tuple(points)


def operating_point_figures(y: np.ndarray, probs: np.ndarray, positive_index: int,
                            points: tuple[OperatingPoint, ...], default: str | None, *,
                            n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> list[dict[str, Any]]:
    """Each operating point with its sensitivity and specificity on this data (95 % bootstrap intervals; every
    point sees the same resamples) beside the validation figures it was chosen with."""
    positive = np.asarray(y) == positive_index
    score = np.asarray(probs)[:, positive_index]
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(y), len(y)) for _ in range(n_bootstrap)]
    rows = []
    for p in points:
        sens, spec = sensitivity_specificity(positive, score, p.threshold)
        boot = np.array([sensitivity_specificity(positive[i], score[i], p.threshold) for i in draws]).reshape(-1, 2)

        def ci(col: int, boot: np.ndarray = boot) -> list[float] | None:
            values = boot[:, col]
            return None if np.all(np.isnan(values)) else [float(np.nanpercentile(values, 2.5)),
                                                          float(np.nanpercentile(values, 97.5))]

        rows.append({"name": p.name, "threshold": p.threshold, "criterion": p.criterion, "target": p.target,
                     "default": p.name == default,
                     "validation": {"sensitivity": p.sensitivity, "specificity": p.specificity, "n": p.n},
                     "sensitivity": sens, "specificity": spec, "n": int(len(y)),
                     "ci": {"sensitivity": ci(0), "specificity": ci(1)}})
    return rows
