"""Operating points meet their targets on the validation data they are chosen on, and are reported with intervals."""

from __future__ import annotations

import numpy as np
import pytest

from cadx.engine.operating_points import (
    choose_operating_points,
    operating_point_figures,
    sensitivity_specificity,
    threshold_for_sensitivity,
    threshold_for_specificity,
)


def _validation(seed: int, n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.18), 0, 1)
    return y, np.stack([1 - p, p], 1)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("target", [0.8, 0.9, 0.95, 0.99])
def test_targets_are_met_on_validation(seed: int, target: float) -> None:
    y, probs = _validation(seed)
    points = {p.name: p for p in choose_operating_points(y, probs, 1, target_sensitivity=target,
                                                         target_specificity=target)}
    sens, _ = sensitivity_specificity(y == 1, probs[:, 1], points["high-sensitivity"].threshold)
    _, spec = sensitivity_specificity(y == 1, probs[:, 1], points["high-specificity"].threshold)
    assert sens >= target and points["high-sensitivity"].sensitivity == sens
    assert spec >= target and points["high-specificity"].specificity == spec
    if target >= 0.9:  # beyond what Youden's J reaches on this data: the two points lie on either side of it
        assert (points["high-sensitivity"].threshold < points["balanced"].threshold
                < points["high-specificity"].threshold)


def test_the_highest_threshold_meeting_the_sensitivity_is_chosen() -> None:
    positive = np.array([1, 1, 1, 1, 0, 0], dtype=bool)
    score = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1])
    assert threshold_for_sensitivity(positive, score, 0.75) == pytest.approx(0.7)  # 3 of 4 positives
    above = np.nextafter(0.7, 1)
    assert sensitivity_specificity(positive, score, above)[0] < 0.75  # any higher threshold misses the target
    t = threshold_for_specificity(positive, score, 0.5)  # one of two negatives below: just above 0.1
    assert 0.1 < t <= 0.2 and sensitivity_specificity(positive, score, t) == (1.0, 0.5)


def test_figures_on_other_data_carry_intervals() -> None:
    y, probs = _validation(0)
    points = choose_operating_points(y, probs, 1)
    yt, pt = _validation(9, 300)
    rows = operating_point_figures(yt, pt, 1, points, "balanced", n_bootstrap=200)
    assert [r["name"] for r in rows] == ["balanced", "high-sensitivity", "high-specificity"]
    assert rows[0]["default"] and not rows[1]["default"]
    for r in rows:
        lo, hi = r["ci"]["sensitivity"]
        assert lo <= r["sensitivity"] <= hi and r["validation"]["n"] == 500


def test_a_named_point_is_never_on_the_wrong_side_of_the_balanced_one() -> None:
    """On an easy validation split Youden's J already exceeds a 0.8 target: the 'high-sensitivity' point must not
    become less sensitive than 'balanced' (nor 'high-specificity' less specific)."""
    rng = np.random.default_rng(3)
    y = (rng.random(400) < 0.5).astype(int)
    p = np.clip(rng.normal(0.2 + 0.6 * y, 0.1), 0, 1)
    points = {q.name: q for q in choose_operating_points(y, np.stack([1 - p, p], 1), 1, target_sensitivity=0.8,
                                                         target_specificity=0.8)}
    balanced = points["balanced"]
    assert balanced.sensitivity > 0.8 and balanced.specificity > 0.8
    assert points["high-sensitivity"].threshold <= balanced.threshold
    assert points["high-sensitivity"].sensitivity >= balanced.sensitivity
    assert points["high-specificity"].threshold >= balanced.threshold
    assert points["high-specificity"].specificity >= balanced.specificity
