"""The decision rule and the threshold fallback, each defined once."""

from __future__ import annotations

import numpy as np
import pytest

from cadx.data.transforms import Preprocessing
from cadx.engine.decision import decide, decide_all, decision_indices, resolve_threshold
from cadx.engine.meta import DEFAULT_THRESHOLD, new_meta

PRE = Preprocessing(32, 1)
BINARY = new_meta("simple_cnn", ["normal", "pneumonia"], PRE, decision_threshold=0.3,
                  threshold_source="validation (Youden's J)")
MULTICLASS = new_meta("simple_cnn", ["glioma", "meningioma", "notumor"], PRE)
MULTILABEL = new_meta("simple_cnn", ["effusion", "mass", "nodule"], PRE, task="multilabel")


def test_binary_decides_at_the_threshold_not_the_argmax() -> None:
    d = decide(np.array([0.65, 0.35]), BINARY)
    assert d.findings == ("pneumonia",) and d.indices == (1,) and d.probability == pytest.approx(0.35)
    assert d.most_probable == "normal" and d.target_index == 1
    assert (d.threshold, d.threshold_source) == (0.3, "checkpoint: validation (Youden's J)")
    assert decide(np.array([0.65, 0.35]), BINARY, 0.4, "chosen by hand").threshold_source == "chosen by hand"
    given = decide(np.array([0.65, 0.35]), BINARY, 0.5)
    assert given.findings == ("normal",) and given.threshold_source == "given" and given.label == "normal"
    assert decide(np.array([0.7, 0.3]), BINARY).findings == ("pneumonia",)  # >= is the finding


def test_multiclass_is_the_argmax_without_a_threshold() -> None:
    d = decide(np.array([0.2, 0.5, 0.3]), MULTICLASS, 0.9)
    assert d.findings == ("meningioma",) and d.threshold is None and d.threshold_source is None


def test_multilabel_asserts_every_label_at_the_threshold() -> None:
    d = decide(np.array([0.6, 0.2, 0.9]), MULTILABEL)
    assert d.findings == ("effusion", "nodule") and d.probability == pytest.approx(0.9)
    assert d.label == "effusion, nodule"
    assert d.target_index == 2  # the heatmap explains the strongest finding, whose probability is shown
    none = decide(np.array([0.1, 0.2, 0.3]), MULTILABEL)
    assert none.findings == () and none.probability is None and none.label == "none"
    assert none.target_index == 2  # nothing asserted: the heatmap shows the most probable label


def test_fallback_and_range() -> None:
    assert new_meta("simple_cnn", ["a", "b"], PRE).decision_threshold == DEFAULT_THRESHOLD
    assert resolve_threshold(BINARY, None) == (0.3, "checkpoint: validation (Youden's J)")
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="between 0 and 1"):
            resolve_threshold(BINARY, bad)


def test_vectorised_rule_matches_the_per_image_decision() -> None:
    probs = np.random.default_rng(0).dirichlet([1, 1], 50)
    rule = decision_indices(probs, positive_index=1, threshold=0.3)
    assert [d.indices[0] for d in decide_all(probs, BINARY)] == rule.tolist()
    with pytest.raises(ValueError, match="probabilities"):
        decide_all(probs[:, :1], BINARY)


def test_a_decision_names_its_operating_point_and_a_custom_threshold_none() -> None:
    from cadx.engine.meta import OperatingPoint

    points = (OperatingPoint("balanced", 0.3, "youden", sensitivity=0.9, specificity=0.9, n=10),
              OperatingPoint("high-sensitivity", 0.1, "sensitivity", 0.95, 0.96, 0.5, 10))
    meta = BINARY.with_changes(operating_points=points, default_operating_point="balanced")
    d = decide(np.array([0.8, 0.2]), meta)
    assert d.operating_point == "balanced" and d.findings == ("normal",)
    sensitive = decide(np.array([0.8, 0.2]), meta, operating_point="high-sensitivity")
    assert sensitive.operating_point == "high-sensitivity" and sensitive.findings == ("pneumonia",)
    assert sensitive.threshold == 0.1 and "sensitivity >= 0.95" in sensitive.threshold_source
    assert decide(np.array([0.8, 0.2]), meta, 0.15).operating_point is None  # a custom threshold
    with pytest.raises(ValueError, match="unknown operating point 'nope'"):
        decide(np.array([0.8, 0.2]), meta, operating_point="nope")


def test_uncertain_near_the_threshold_or_when_the_mirror_disagrees() -> None:
    from cadx.engine.decision import FLIP_REASON, UNCERTAINTY_MARGIN

    near = decide(np.array([0.65, 0.35]), BINARY)  # p 0.35, threshold 0.3
    assert near.uncertain and "within 0.1 of the threshold 0.300" in near.uncertain_reason
    far = decide(np.array([0.1, 0.9]), BINARY)
    assert not far.uncertain and far.uncertain_reason is None
    mirrored = decide(np.array([0.1, 0.9]), BINARY, flipped=np.array([0.9, 0.1]))
    assert mirrored.uncertain and mirrored.uncertain_reason == FLIP_REASON
    assert not decide(np.array([0.1, 0.9]), BINARY, flipped=np.array([0.2, 0.8])).uncertain
    edge = 0.3 + UNCERTAINTY_MARGIN + 1e-6
    assert not decide(np.array([1 - edge, edge]), BINARY).uncertain
    assert decide(np.array([0.45, 0.4, 0.15]), MULTICLASS).uncertain  # top two 0.05 apart
    assert not decide(np.array([0.7, 0.2, 0.1]), MULTICLASS).uncertain
    assert decide(np.array([0.95, 0.55, 0.05]), MULTILABEL).uncertain  # mass at 0.55, threshold 0.5
    declined = decide(np.array([0.65, 0.35]), BINARY, reason="blank image")
    assert not declined.uncertain and declined.operating_point is None
