"""Out-of-distribution scores from the model itself, so that an image unlike the training data is "not assessed".

Two scores, both fitted after training and stored in the checkpoint (``CheckpointMeta.ood``):

* **Mahalanobis** (Lee et al. 2018, with their feature ensemble over layers): at the output of every stage of the
  network, two feature sets (the channels' spatial means, and their spatial standard deviations, the first-order
  feature statistics that texture and style differences move), a Gaussian per class fitted on the training split
  (Ledoit-Wolf shrinkage, scikit-learn) and the image's best class by likelihood: the smallest Mahalanobis distance
  to a class mean plus the log-determinant of that class's covariance (-2 log p(x | class) up to a constant). Each
  class gets its own covariance (Lee et al. share one; a class's own spread fits it more tightly) when every class
  has ``MIN_IMAGES_PER_CLASS`` training images; else one shared covariance, as checkpoints fitted before stored.
  Each stage's score is standardised by its mean and spread on the validation split and all are summed with equal
  weights (no foreign data is used to weigh them). On the shipped models the sum over stages rejected far more
  foreign images than the last stage alone, adding the standard deviations more again, and the per-class
  covariance more again, at the same 99 % (``benchmarks/abstention``);
* **energy** (Liu et al. 2020): ``-logsumexp(logits)``; nothing to fit but the threshold.

Higher is more foreign for both. The threshold keeps a stated share (``keep``, default 99 %) of the model's own
**validation** images, never test images. ``benchmarks/abstention`` measures both on foreign data; the better one is
the default (``DEFAULT_METHOD``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

METHODS = ("mahalanobis", "energy")
DEFAULT_METHOD = "mahalanobis"
DEFAULT_KEEP = 0.99
STD_SUFFIX = ":std"
MAX_FIT_IMAGES = 4000  # training images used for the class means and covariances (a seeded sample beyond that)
MIN_IMAGES_PER_CLASS = 20  # fewer in any class: one covariance shared by all classes


def logits_and_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward pass: the logits and, for each stage, its output's channel means (key: the stage's name) and
    channel standard deviations (key: ``<stage>:std``, for maps larger than 1 x 1), each (B, C) (hooks for this
    call only, ignoring other threads, so a model shared by a web server is never affected). Checkpoints fitted
    before the standard deviations existed name only the means, so they score as they were fitted."""
    owner = threading.get_ident()
    captured: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())

    def keep(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if threading.get_ident() == owner and isinstance(output, torch.Tensor) and output.ndim == 4:
                values = output.detach().float().flatten(2)
                captured[name] = values.mean(dim=2)
                if values.shape[2] > 1:  # a 1 x 1 map has no spread
                    captured[f"{name}{STD_SUFFIX}"] = values.std(dim=2)
        return hook

    stages = [s for s in getattr(model, "stage_names", []) if s in modules]
    if not stages:
        raise ValueError(f"{type(model).__name__} names no stages to take features from")
    handles = [modules[s].register_forward_hook(keep(s)) for s in stages]
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    if isinstance(logits, tuple):  # auxiliary heads in training mode
        logits = logits[0]
    return logits, {k: captured[k] for s in stages for k in (s, f"{s}{STD_SUFFIX}") if k in captured}


Features = dict[str, np.ndarray]  # stage name (means) or "<stage>:std" -> (N, C)


@dataclass(frozen=True)
class StageFit:
    """One stage's class means, inverse covariance (shared, or one per class with its log-determinant), and the
    validation mean and spread of its distances."""

    means: np.ndarray  # (K, C)
    precision: np.ndarray  # (C, C) shared, or (K, C, C) one per class
    centre: float = 0.0
    scale: float = 1.0
    logdets: np.ndarray | None = None  # (K,): log |covariance| of each class (per-class covariances only)

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Per image, the smallest squared Mahalanobis distance (+ log-determinant) over the classes. Matrix products
        (K, N, C) @ (C, C) or (K, C, C): a three-operand einsum was 28x slower, on the prediction path."""
        diffs = np.asarray(features, dtype=np.float64)[None] - self.means[:, None, :]
        squared = ((diffs @ self.precision) * diffs).sum(axis=2)
        return (squared + (0.0 if self.logdets is None else self.logdets[:, None])).min(axis=0)


@dataclass(frozen=True, eq=False)
class OodModel:
    """A fitted out-of-distribution score and its threshold (scores above it are out of distribution)."""

    method: str
    threshold: float
    keep: float
    stages: dict[str, StageFit] = field(default_factory=dict)  # Mahalanobis: one fit per stage
    fitted: dict[str, Any] = field(default_factory=dict)  # what it was fitted on (split sizes, stages)

    def score(self, logits: np.ndarray, features: Features) -> np.ndarray:
        if self.method == "energy":
            logits = np.asarray(logits, dtype=np.float64)
            top = logits.max(axis=1, keepdims=True)
            return -(top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))
        return np.sum([(fit.distance(features[name]) - fit.centre) / fit.scale for name, fit in self.stages.items()],
                      axis=0)

    def reason(self, score: float) -> str | None:
        if not np.isfinite(score) or score > self.threshold:
            return (f"unlike the images this model was trained on ({self.method} score {score:.1f} > "
                    f"{self.threshold:.1f}, the limit that keeps {100 * self.keep:g} % of its validation images)")
        return None

    def to_dict(self) -> dict[str, Any]:
        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

        return {"method": self.method, "threshold": float(self.threshold), "keep": float(self.keep),
                "stages": {name: {"means": tensor(f.means), "precision": tensor(f.precision), "centre": f.centre,
                                  "scale": f.scale} | ({} if f.logdets is None else {"logdets": tensor(f.logdets)})
                           for name, f in self.stages.items()},
                "fitted": dict(self.fitted)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OodModel:
        def array(v: Any) -> np.ndarray:
            return np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v, np.float64)

        stages = {name: StageFit(array(f["means"]), array(f["precision"]), float(f["centre"]), float(f["scale"]),
                                 array(f["logdets"]) if f.get("logdets") is not None else None)
                  for name, f in (data.get("stages") or {}).items()}
        return cls(method=str(data["method"]), threshold=float(data["threshold"]), keep=float(data["keep"]),
                   stages=stages, fitted=dict(data.get("fitted") or {}))


def _fit_stage(features: np.ndarray, labels: np.ndarray, per_class: bool) -> StageFit:
    from sklearn.covariance import LedoitWolf  # fitting only: scoring needs no scikit-learn

    f = features.astype(np.float64)
    classes = np.unique(labels)
    means = np.stack([f[labels == c].mean(axis=0) for c in classes])
    if not per_class:
        centred = f - means[np.searchsorted(classes, labels)]
        return StageFit(means, LedoitWolf(assume_centered=True).fit(centred).precision_)
    fits = [LedoitWolf(assume_centered=True).fit(f[labels == c] - m) for c, m in zip(classes, means, strict=True)]
    logdets = np.array([np.linalg.slogdet(fit.covariance_)[1] for fit in fits])
    return StageFit(means, np.stack([fit.precision_ for fit in fits]), logdets=logdets)


def fit_ood(train: tuple[np.ndarray, Features, np.ndarray], val: tuple[np.ndarray, Features], *,
            method: str = DEFAULT_METHOD, keep: float = DEFAULT_KEEP, multilabel: bool = False) -> OodModel:
    """``train``: (logits, stage features, targets) of training images; ``val``: (logits, stage features) of
    validation ones. The threshold keeps ``keep`` of the validation images."""
    if method not in METHODS:
        raise ValueError(f"unknown out-of-distribution method {method!r}; choose one of {', '.join(METHODS)}")
    if not 0.5 <= keep < 1.0:
        raise ValueError(f"keep must be in [0.5, 1), got {keep}")
    logits, features, targets = train
    val_logits, val_features = val
    fitted = {"train_images": int(len(logits)), "val_images": int(len(val_logits))}
    stages: dict[str, StageFit] = {}
    if method == "mahalanobis":
        labels = np.zeros(len(logits), dtype=int) if multilabel else np.asarray(targets, dtype=int)
        per_class = bool(np.unique(labels, return_counts=True)[1].min() >= MIN_IMAGES_PER_CLASS)
        for name, f in features.items():
            fit = _fit_stage(f, labels, per_class)
            d = fit.distance(val_features[name])
            stages[name] = StageFit(fit.means, fit.precision, float(d.mean()), float(max(d.std(), 1e-9)),
                                    fit.logdets)
        fitted["stages"] = {name: int(f.means.shape[1]) for name, f in stages.items()}
        fitted["covariance"] = "per class" if per_class else "shared"
    model = OodModel(method, float("inf"), keep, stages, fitted)
    return OodModel(method, keep_threshold(model.score(val_logits, val_features), keep), keep, stages, fitted)


def keep_threshold(val_scores: np.ndarray, keep: float) -> float:
    """The rule for every threshold of the score: the value below which ``keep`` of the validation images fall."""
    return float(np.quantile(np.asarray(val_scores, dtype=np.float64), keep))
