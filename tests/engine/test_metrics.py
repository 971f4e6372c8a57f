import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from cadx.engine.metrics import (
    bootstrap_ci,
    choose_threshold,
    classification_metrics,
    headline_scores,
    mean_bootstrap_ci,
    multilabel_metrics,
)


@pytest.fixture
def binary() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p1 = np.clip(0.35 * y + rng.uniform(0, 0.65, 300), 0, 1)
    return y, np.stack([1 - p1, p1], 1)


def test_binary_metrics_match_scikit_learn(binary) -> None:
    y, probs = binary
    m = classification_metrics(y, probs, ["normal", "pneumonia"], positive_index=1, threshold=0.5, n_bootstrap=200)
    pred = (probs[:, 1] >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["recall"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["auc"] == pytest.approx(roc_auc_score(y, probs[:, 1]))
    tn, fp, fn, tp = np.array(m["confusion_matrix"]).ravel()
    assert (tn, fp, fn, tp) == (np.sum((y == 0) & (pred == 0)), np.sum((y == 0) & (pred == 1)),
                                np.sum((y == 1) & (pred == 0)), np.sum((y == 1) & (pred == 1)))
    for key in ("accuracy", "f1", "auc"):
        low, high = m["ci"][key]
        assert low <= m[key] <= high and high - low < 0.3


def test_threshold_changes_decisions(binary) -> None:
    y, probs = binary
    low = classification_metrics(y, probs, ["a", "b"], positive_index=1, threshold=0.2, n_bootstrap=10)
    high = classification_metrics(y, probs, ["a", "b"], positive_index=1, threshold=0.8, n_bootstrap=10)
    assert low["recall"] > high["recall"] and low["specificity"] < high["specificity"]
    assert low["auc"] == high["auc"]


def test_youden_threshold_separates_perfect_scores() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    t = choose_threshold(y, np.stack([1 - p, p], 1), 1)
    assert 0.3 < t <= 0.6


def test_multiclass_macro_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 400)
    logits = rng.normal(size=(400, 4)) + 1.5 * np.eye(4)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(y, probs, list("abcd"), n_bootstrap=50)
    pred = probs.argmax(1)
    assert m["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["recall"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert m["auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))
    assert m["average"] == "macro" and set(m["per_class"]) == set("abcd")
    assert sum(pc["support"] for pc in m["per_class"].values()) == 400


def test_multilabel_per_label_auc() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (200, 3))
    probs = np.clip(0.4 * y + rng.uniform(0, 0.6, (200, 3)), 0, 1)
    m = multilabel_metrics(y, probs, ["effusion", "mass", "nodule"], n_bootstrap=20)
    for i, name in enumerate(["effusion", "mass", "nodule"]):
        assert m["per_class"][name]["auc"] == pytest.approx(roc_auc_score(y[:, i], probs[:, i]))
    assert m["auc"] == pytest.approx(np.mean([roc_auc_score(y[:, i], probs[:, i]) for i in range(3)]))


def test_headline_scores_match_scikit_learn(binary) -> None:
    y, probs = binary
    pred = (probs[:, 1] >= 0.4).astype(int)
    s = headline_scores(y, probs, pred, 1)
    assert s["precision"] == pytest.approx(precision_score(y, pred))
    assert s["recall"] == pytest.approx(recall_score(y, pred))
    assert s["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert s["f1"] == pytest.approx(f1_score(y, pred))
    rng = np.random.default_rng(3)
    y3 = rng.integers(0, 3, 200)
    p3 = rng.dirichlet(np.ones(3), 200)
    s3 = headline_scores(y3, p3, p3.argmax(1), None)
    assert s3["precision"] == pytest.approx(precision_score(y3, p3.argmax(1), average="macro"))
    assert s3["f1"] == pytest.approx(f1_score(y3, p3.argmax(1), average="macro"))


def test_every_headline_metric_has_an_interval(binary) -> None:
    y, probs = binary
    m = classification_metrics(y, probs, ["normal", "pneumonia"], positive_index=1, threshold=0.5, n_bootstrap=300)
    assert set(m["ci"]) == {"accuracy", "precision", "recall", "specificity", "f1", "auc"}
    for key, (low, high) in m["ci"].items():
        assert low <= m[key] <= high and 0 < high - low < 0.3, key


def test_seed_mean_interval_counts_shared_test_noise_once(binary) -> None:
    y, probs = binary
    run = (y, probs, (probs[:, 1] >= 0.5).astype(int))
    single = bootstrap_ci(*run, 1, 400, 0)
    assert mean_bootstrap_ci([run, run], 1, 400, 0) == single  # same images, same resamples: same interval
    independent = mean_bootstrap_ci([run, run], 1, 400, 0, shared_images=False)
    for key in ("accuracy", "auc"):  # two independent test sets average their noise: a narrower interval
        assert independent[key][1] - independent[key][0] < 0.85 * (single[key][1] - single[key][0])


def test_multilabel_interval_of_a_seed_mean_over_shared_images() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, (150, 3))
    probs = np.clip(0.4 * y + rng.uniform(0, 0.6, (150, 3)), 0, 1)
    pred = (probs >= 0.5).astype(int)
    single = multilabel_metrics(y, probs, ["a", "b", "c"], n_bootstrap=200)["ci"]
    assert set(single) == {"accuracy", "f1", "auc"}
    assert mean_bootstrap_ci([(y, probs, pred)] * 2, None, 200, 0, multilabel=True) == single
    worse = np.clip(probs + rng.normal(0, 0.4, probs.shape), 0, 1)
    mixed = mean_bootstrap_ci([(y, probs, pred), (y, worse, (worse >= 0.5).astype(int))], None, 200, 0,
                              multilabel=True)
    assert mixed["auc"][1] < single["auc"][1]  # the mean over a weaker run is lower
