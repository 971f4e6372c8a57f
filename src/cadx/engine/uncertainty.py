"""What evaluation reports about the "uncertain - review" flag (``cadx.engine.decision.uncertainty_reason``) and about
ranking answers by confidence: accuracy on flagged vs unflagged images, and the risk-coverage curve with its area
(AURC; Geifman & El-Yaniv 2017), the images ordered by the calibrated probability of the decided class."""

from __future__ import annotations

from typing import Any

import numpy as np

from cadx.engine.decision import FLIP_REASON, UNCERTAINTY_MARGIN, Decision
from cadx.engine.metrics import N_BOOTSTRAP


def _accuracy_ci(correct: np.ndarray, rng: np.random.Generator, n_bootstrap: int) -> list[float] | None:
    if not len(correct):
        return None
    draws = [correct[rng.integers(0, len(correct), len(correct))].mean() for _ in range(n_bootstrap)]
    return [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]


def uncertainty_summary(correct: np.ndarray, decisions: list[Decision], *, n_bootstrap: int = N_BOOTSTRAP,
                        seed: int = 0) -> dict[str, Any]:
    """Accuracy (with 95 % bootstrap intervals) of the assessed images the flag marks uncertain and of the others,
    how many there are, what share of all errors the flagged ones hold, and why they were flagged."""
    assessed = np.array([d.assessed for d in decisions], dtype=bool)
    flagged = np.array([d.uncertain for d in decisions], dtype=bool) & assessed
    kept = assessed & ~flagged
    correct = np.asarray(correct, dtype=bool)
    errors = (~correct & assessed).sum()
    rng = np.random.default_rng(seed)
    flip = sum(1 for d in decisions if d.uncertain and FLIP_REASON in (d.uncertain_reason or ""))
    near = sum(1 for d in decisions if d.uncertain and (d.uncertain_reason or "").replace(FLIP_REASON, "").strip("; "))
    return {
        "margin": UNCERTAINTY_MARGIN, "n_assessed": int(assessed.sum()),
        "flagged": {"n": int(flagged.sum()), "rate": float(flagged.sum() / max(assessed.sum(), 1)),
                    "accuracy": float(correct[flagged].mean()) if flagged.any() else None,
                    "ci": _accuracy_ci(correct[flagged].astype(float), rng, n_bootstrap)},
        "unflagged": {"n": int(kept.sum()),
                      "accuracy": float(correct[kept].mean()) if kept.any() else None,
                      "ci": _accuracy_ci(correct[kept].astype(float), rng, n_bootstrap)},
        "errors_flagged": int((~correct & flagged).sum()), "errors": int(errors),
        "share_of_errors_flagged": float((~correct & flagged).sum() / errors) if errors else None,
        "by_reason": {"near the threshold": int(near), "flip disagrees": int(flip)},
    }


def risk_coverage(correct: np.ndarray, confidence: np.ndarray) -> dict[str, Any]:
    """Selective classification: keep the k most confident images, k = 1..N; risk = error rate among them.
    AURC is the mean risk over all k (lower is better); ``optimal_aurc`` that of a perfect ranking with the same
    errors, ``excess_aurc`` the difference."""
    correct = np.asarray(correct, dtype=bool)
    n = len(correct)
    if not n:
        return {"coverage": [], "risk": [], "aurc": None, "optimal_aurc": None, "excess_aurc": None}
    order = np.argsort(-np.asarray(confidence, dtype=float), kind="stable")
    k = np.arange(1, n + 1)
    risk = np.cumsum(~correct[order]) / k
    ideal = np.cumsum(np.sort(~correct)) / k  # the errors last
    aurc, optimal = float(risk.mean()), float(ideal.mean())
    step = max(1, n // 200)  # at most ~200 points kept in metrics.json; AURC is computed on every k
    keep = np.unique(np.r_[np.arange(0, n, step), n - 1])
    return {"coverage": (k[keep] / n).round(5).tolist(), "risk": risk[keep].round(5).tolist(), "aurc": aurc,
            "optimal_aurc": optimal, "excess_aurc": aurc - optimal, "n": n,
            "confidence": "calibrated probability of the decided class"}
