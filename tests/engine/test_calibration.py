"""Calibration scores against hand-computed values, temperature scaling on a synthetic over-confident model, and
the one logits -> probabilities function every consumer uses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cadx.data.transforms import Preprocessing
from cadx.engine.calibration import (
    apply,
    brier,
    calibration_scores,
    ece,
    fit_calibration,
    fit_temperature,
    nll,
    paired_calibration_scores,
    probabilities,
    reliability_bins,
)
from cadx.engine.meta import Calibration, new_meta

PRE = Preprocessing(32, 1)
BINARY = new_meta("simple_cnn", ["normal", "pneumonia"], PRE)
MULTICLASS = new_meta("simple_cnn", ["a", "b", "c"], PRE)
MULTILABEL = new_meta("simple_cnn", ["effusion", "mass"], PRE, task="multilabel")


def test_ece_brier_nll_match_hand_computed_values() -> None:
    y = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.55, 0.45]])
    # top-label confidences 0.9, 0.8, 0.6, 0.55; correct: yes, yes, no, yes. 15 bins of width 1/15:
    # 0.9 -> bin 13 (0.867, 0.933], 0.8 -> bin 11 (0.733, 0.8], 0.6 -> bin 8 (0.533, 0.6], 0.55 -> bin 8.
    # bin 13: |1 - 0.9| = 0.1; bin 11: |1 - 0.8| = 0.2; bin 8: |0.5 - 0.575| = 0.075 over 2 images.
    assert ece(y, probs) == pytest.approx((0.1 + 0.2 + 2 * 0.075) / 4)
    # Brier: sum_k (p_k - onehot)^2 per image: 0.02, 0.08, 0.72, 0.405
    assert brier(y, probs) == pytest.approx((0.02 + 0.08 + 0.72 + 0.405) / 4)
    assert nll(y, probs) == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(0.55)) / 4)


def test_multilabel_scores_are_per_label() -> None:
    y = np.array([[1, 0], [0, 0]])
    probs = np.array([[0.8, 0.3], [0.3, 0.1]])
    # label 0: bins of 0.8 (|1-0.8|) and 0.3 (|0-0.3|) -> (0.2 + 0.3) / 2; label 1: 0.3 and 0.1 in bins 4 and 1
    assert ece(y, probs, multilabel=True) == pytest.approx(((0.2 + 0.3) / 2 + (0.3 + 0.1) / 2) / 2)
    assert brier(y, probs, multilabel=True) == pytest.approx((0.04 + 0.09 + 0.09 + 0.01) / 4)
    expected = -(math.log(0.8) + math.log(0.7) + math.log(0.7) + math.log(0.9)) / 4
    assert nll(y, probs, multilabel=True) == pytest.approx(expected)


def test_reliability_bins_count_every_image() -> None:
    bins = reliability_bins(np.array([0.05, 0.5, 0.52, 1.0]), np.array([1, 0, 1, 1]))
    assert sum(bins["count"]) == 4 and len(bins["count"]) == 15
    assert bins["count"][0] == 1 and bins["count"][14] == 1 and bins["count"][7] == 2
    assert bins["accuracy"][7] == pytest.approx(0.5) and bins["confidence"][3] is None


def _overconfident(n: int = 2000, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), but the model reports 3 z: over-confident by a factor of 3."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, k))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    return 3 * z, y


def test_temperature_scaling_lowers_nll_of_an_overconfident_model() -> None:
    logits, y = _overconfident()
    (t,) = fit_temperature(logits, y, MULTICLASS)
    assert t == pytest.approx(3.0, rel=0.15)
    cal = fit_calibration(logits, y, MULTICLASS)
    assert cal.nll_after < cal.nll_before - 0.1 and cal.ece_after < cal.ece_before
    scaled = apply(logits, MULTICLASS.with_changes(calibration=cal))
    assert nll(y, scaled) == pytest.approx(cal.nll_after) and nll(y, scaled) < nll(y, apply(logits, MULTICLASS))


def test_single_logit_and_multilabel_get_their_own_temperatures() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, (3000, 1))
    y = (rng.random(3000) < 1 / (1 + np.exp(-z[:, 0]))).astype(int)
    single = new_meta("simple_cnn", ["normal", "pneumonia"], PRE, num_classes=1)
    (t,) = fit_temperature(4 * z, y, single)
    assert t == pytest.approx(4.0, rel=0.15)
    y2 = np.stack([y, (rng.random(3000) < 1 / (1 + np.exp(-z[:, 0]))).astype(int)], 1)
    ts = fit_temperature(np.concatenate([4 * z, 0.5 * z], 1), y2, MULTILABEL)
    assert ts[0] == pytest.approx(4.0, rel=0.15) and ts[1] == pytest.approx(0.5, rel=0.15)


def test_one_function_turns_logits_into_probabilities() -> None:
    logits = torch.tensor([[2.0, 0.0]])
    assert probabilities(logits, BINARY)[0, 1].item() == pytest.approx(1 / (1 + math.exp(2)))
    hot = BINARY.with_changes(calibration=Calibration(temperatures=(2.0,)))
    assert probabilities(logits, hot)[0, 1].item() == pytest.approx(1 / (1 + math.exp(1)))
    assert probabilities(logits, hot, calibrated=False)[0, 1].item() == pytest.approx(1 / (1 + math.exp(2)))
    single = new_meta("simple_cnn", ["normal", "pneumonia"], PRE, num_classes=1)
    p = probabilities(torch.tensor([[0.0], [1.0]]), single)
    assert p.shape == (2, 2) and p[1, 1].item() == pytest.approx(1 / (1 + math.exp(-1)))


def test_bootstrap_intervals_hold_the_estimate_and_are_paired() -> None:
    logits, y = _overconfident(400)
    raw = apply(logits, MULTICLASS)
    scores = calibration_scores(y, raw, n_bootstrap=200)
    for key in ("ece", "brier", "nll"):
        lo, hi = scores["ci"][key]
        assert lo <= scores[key] <= hi and lo < hi
    both = paired_calibration_scores(y, {"a": raw, "b": raw}, n_bootstrap=50)
    assert both["a"]["ci"] == both["b"]["ci"]  # the same resamples for both sets
