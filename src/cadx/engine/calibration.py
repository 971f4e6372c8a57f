"""Calibration: temperature scaling (Guo et al. 2017) and the scores that say whether a probability means what it
says (ECE, Brier score, negative log-likelihood), with bootstrap intervals drawn as ``cadx.engine.metrics`` draws
them (1000 seeded resamples of the images, percentile 95 %).

``probabilities`` is the one function that turns a network's logits into the class probabilities every consumer
shows (predictor, explainer, evaluation, ensembles through their members): a single logit is expanded to two
classes, multi-label outputs get a sigmoid per label, everything else a softmax, each after the checkpoint's
temperature(s).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cadx.engine.meta import Calibration, CheckpointMeta

N_BINS = 15  # equal-width confidence bins of the ECE and the reliability diagram (Guo et al. 2017)
LOG_T_BOUNDS = (-3.0, 3.0)  # temperatures between 0.05 and 20: wider never helped a network we trained
EPS = 1e-12


def _temperatures(meta: CheckpointMeta, calibrated: bool, width: int) -> torch.Tensor | None:
    if not calibrated or meta.calibration is None:
        return None
    t = torch.tensor(meta.calibration.temperatures, dtype=torch.float32)
    return t if len(t) in (1, width) else None


def probabilities(logits: torch.Tensor, meta: CheckpointMeta, *, calibrated: bool = True) -> torch.Tensor:
    """(B, outputs) logits -> (B, K) class probabilities, after the checkpoint's temperature(s) unless
    ``calibrated`` is False (identity for a checkpoint without calibration)."""
    logits = logits.float()
    t = _temperatures(meta, calibrated, logits.shape[1])
    if t is not None:
        logits = logits / t.to(logits.device)
    if logits.shape[1] == 1 and not meta.multilabel:  # one logit speaks for the positive class of two
        p = torch.sigmoid(logits)
        if len(meta.classes) != 2:
            return p
        positive = 1 if meta.positive_index is None else meta.positive_index
        return torch.cat([1 - p, p] if positive == 1 else [p, 1 - p], dim=1)
    return torch.sigmoid(logits) if meta.multilabel else torch.softmax(logits, dim=1)


def apply(logits: np.ndarray, meta: CheckpointMeta, *, calibrated: bool = True) -> np.ndarray:
    """NumPy twin of :func:`probabilities`."""
    return probabilities(torch.as_tensor(np.asarray(logits, dtype=np.float32)), meta,
                         calibrated=calibrated).numpy()


# -- fitting ----------------------------------------------------------------------------------------------------
def _nll_at(logits: np.ndarray, y: np.ndarray, t: float, kind: str) -> float:
    z = logits / t
    if kind == "softmax":
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean())
    # sigmoid (one column): binary cross-entropy, stable form
    z = z.ravel()
    return float(np.mean(np.logaddexp(0, z) - y * z))


def _fit_one(logits: np.ndarray, y: np.ndarray, kind: str) -> float:
    """The temperature minimising the NLL: a bounded 1-D search on log T (the NLL is smooth and unimodal in T)."""
    from scipy.optimize import minimize_scalar  # fitting only: predicting needs no SciPy

    found = minimize_scalar(lambda s: _nll_at(logits, y, float(np.exp(s)), kind), bounds=LOG_T_BOUNDS,
                            method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def fit_temperature(logits: np.ndarray, y: np.ndarray, meta: CheckpointMeta) -> tuple[float, ...]:
    """Temperature(s) fitted on (N, outputs) logits and their targets: one for a softmax head, one on the logit of a
    single-logit binary head, one per label for multi-label (y multi-hot)."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y)
    if meta.multilabel:
        return tuple(_fit_one(logits[:, [i]], y[:, i].astype(float), "sigmoid") for i in range(logits.shape[1]))
    if logits.shape[1] == 1:
        positive = 1 if meta.positive_index is None else meta.positive_index
        return (_fit_one(logits, (y == positive).astype(float), "sigmoid"),)
    return (_fit_one(logits, y.astype(int), "softmax"),)


def fit_calibration(logits: np.ndarray, y: np.ndarray, meta: CheckpointMeta,
                    fitted_on: str = "validation") -> Calibration:
    """A :class:`Calibration` for ``meta`` fitted on these logits, with the NLL and ECE before and after."""
    temperatures = fit_temperature(logits, y, meta)
    uncalibrated = meta.with_changes(calibration=None)
    before = apply(logits, uncalibrated)
    candidate = Calibration(temperatures=temperatures, fitted_on=fitted_on, n=int(len(y)))
    after = apply(logits, meta.with_changes(calibration=candidate))
    multilabel = meta.multilabel
    return Calibration(temperatures=temperatures, fitted_on=fitted_on, n=int(len(y)),
                       nll_before=nll(y, before, multilabel), nll_after=nll(y, after, multilabel),
                       ece_before=ece(y, before, multilabel), ece_after=ece(y, after, multilabel))


# -- scores -----------------------------------------------------------------------------------------------------
def _bins(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index of each confidence in [0, 1]: equal-width bins, (lo, hi] with 0 in the first."""
    return np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> dict[str, list]:
    """Per equal-width bin: count, mean confidence and observed frequency (None in empty bins)."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    which = _bins(confidence, n_bins)
    counts = np.bincount(which, minlength=n_bins)
    conf = np.bincount(which, weights=confidence, minlength=n_bins)
    hits = np.bincount(which, weights=correct, minlength=n_bins)
    return {"edges": np.linspace(0, 1, n_bins + 1).tolist(), "count": counts.tolist(),
            "confidence": [float(c / n) if n else None for c, n in zip(conf, counts, strict=True)],
            "accuracy": [float(h / n) if n else None for h, n in zip(hits, counts, strict=True)]}


def _ece_of(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    which = _bins(confidence, n_bins)
    counts = np.bincount(which, minlength=n_bins)
    gap = np.abs(np.bincount(which, weights=confidence, minlength=n_bins)
                 - np.bincount(which, weights=correct.astype(float), minlength=n_bins))
    return float(gap.sum() / max(counts.sum(), 1))


def top_label(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) of the most probable class of each image."""
    return probs.max(axis=1), probs.argmax(axis=1) == y


def ece(y: np.ndarray, probs: np.ndarray, multilabel: bool = False, n_bins: int = N_BINS) -> float:
    """Expected calibration error: sum over bins of |accuracy - confidence| weighted by the bin's share.
    Single-label: top-label (confidence = the highest probability). Multi-label: per label, p(label) against
    how often the label is present, averaged over the labels."""
    y, probs = np.asarray(y), np.asarray(probs, dtype=float)
    if multilabel:
        return float(np.mean(ece_per_label(y, probs, n_bins)))
    return _ece_of(*top_label(y, probs), n_bins)


def ece_per_label(y: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS) -> list[float]:
    return [_ece_of(probs[:, i], y[:, i].astype(bool), n_bins) for i in range(probs.shape[1])]


def brier(y: np.ndarray, probs: np.ndarray, multilabel: bool = False) -> float:
    """Brier score: single-label, the mean over images of sum_k (p_k - [k = y])^2 (0 best, 2 worst); multi-label,
    the mean of (p - y)^2 over images and labels."""
    y, probs = np.asarray(y), np.asarray(probs, dtype=float)
    target = y.astype(float) if multilabel else np.eye(probs.shape[1])[y]
    per_image = ((probs - target) ** 2).mean(axis=1) if multilabel else ((probs - target) ** 2).sum(axis=1)
    return float(per_image.mean())


def nll(y: np.ndarray, probs: np.ndarray, multilabel: bool = False) -> float:
    """Mean negative log-likelihood (natural log) of the true class; multi-label: the mean binary cross-entropy."""
    y, probs = np.asarray(y), np.clip(np.asarray(probs, dtype=float), EPS, 1 - EPS)
    if multilabel:
        return float(-np.mean(y * np.log(probs) + (1 - y) * np.log(1 - probs)))
    return float(-np.mean(np.log(probs[np.arange(len(y)), y])))


SCORES = {"ece": ece, "brier": brier, "nll": nll}


def calibration_scores(y: np.ndarray, probs: np.ndarray, multilabel: bool = False, *, n_bootstrap: int | None = None,
                       seed: int = 0) -> dict[str, Any]:
    """ECE, Brier and NLL with their 95 % percentile bootstrap intervals (``n_bootstrap`` seeded resamples)."""
    return paired_calibration_scores(y, {"probs": probs}, multilabel, n_bootstrap=n_bootstrap, seed=seed)["probs"]


def paired_calibration_scores(y: np.ndarray, variants: dict[str, np.ndarray], multilabel: bool = False, *,
                              n_bootstrap: int | None = None, seed: int = 0) -> dict[str, dict[str, Any]]:
    """:func:`calibration_scores` of several probability sets of the same images (e.g. before and after
    calibration); every resample draws the same images for all of them, so their intervals are comparable;
    ``n_bootstrap`` defaults to ``cadx.engine.metrics``' count (imported here: predicting needs no scikit-learn)."""
    from cadx.engine.metrics import N_BOOTSTRAP

    n_bootstrap = N_BOOTSTRAP if n_bootstrap is None else n_bootstrap
    y = np.asarray(y)
    out: dict[str, dict[str, Any]] = {}
    for name, probs in variants.items():
        out[name] = {k: f(y, probs, multilabel) for k, f in SCORES.items()}
        if multilabel:
            out[name]["ece_per_label"] = ece_per_label(y, np.asarray(probs, dtype=float))
        out[name]["ci"] = {k: [] for k in SCORES}
    rng = np.random.default_rng(seed)
    samples: dict[str, dict[str, list[float]]] = {name: {k: [] for k in SCORES} for name in variants}
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(y), len(y))
        for name, probs in variants.items():
            for k, f in SCORES.items():
                samples[name][k].append(f(y[idx], probs[idx], multilabel))
    for name in variants:
        for k in SCORES:
            values = samples[name][k]
            out[name]["ci"][k] = ([float(np.nanpercentile(values, 2.5)), float(np.nanpercentile(values, 97.5))]
                                  if values else None)
    return out
