"""One decision per image: probabilities in, a small immutable result out (the finding(s) asserted, the probability
of that finding, the threshold used and where it came from).

The rule lives here once (``decision_indices``) and the threshold fallback once (``resolve_threshold``). The CLI,
evaluation, the explainer's default target, the server card, the database row, the PDF and the history filter
all read a :class:`Decision`; none of them re-derives it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cadx.engine.meta import CheckpointMeta


def resolve_threshold(meta: CheckpointMeta, requested: float | None = None) -> tuple[float, str]:
    """The threshold asked for, else the checkpoint's; with where it came from."""
    if requested is None:
        return float(meta.decision_threshold), f"checkpoint: {meta.threshold_source}"
    if not (math.isfinite(requested) and 0.0 <= requested <= 1.0):
        raise ValueError(f"threshold must be between 0 and 1, got {requested}")
    return float(requested), "given"


def decision_indices(probs: np.ndarray, *, positive_index: int | None = None, threshold: float = 0.5,
                     multilabel: bool = False) -> np.ndarray:
    """The decision rule of every cadx model, for (N, K) probabilities (metrics use it without a checkpoint).

    Binary: the positive class when p(positive) >= threshold, else the other one. Multi-label: a 0/1 matrix, each
    label asserted when its probability >= threshold. Other single-label tasks: the most probable class.
    """
    probs = np.asarray(probs)
    if multilabel:
        return (probs >= threshold).astype(int)
    if positive_index is None:
        return probs.argmax(1)
    return np.where(probs[:, positive_index] >= threshold, positive_index, 1 - positive_index)


@dataclass(frozen=True)
class Decision:
    findings: tuple[str, ...]  # single-label: exactly one class; multi-label: every label asserted (maybe none)
    indices: tuple[int, ...]
    probability: float | None  # of the finding (multi-label: the highest asserted; None when none is)
    threshold: float | None  # None where no threshold takes part (multi-class argmax)
    threshold_source: str | None
    most_probable: str
    most_probable_index: int

    @property
    def label(self) -> str:
        """As a table cell shows it: the finding, several joined by ', ', or 'none'."""
        return ", ".join(self.findings) or "none"

    @property
    def target_index(self) -> int:
        """The class a heatmap should explain: the finding, else (nothing asserted) the most probable class."""
        return self.indices[0] if self.indices else self.most_probable_index


def decide_all(probs: np.ndarray, meta: CheckpointMeta, threshold: float | None = None) -> list[Decision]:
    """A decision for each row of (N, K) probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(meta.classes):
        raise ValueError(f"expected (N, {len(meta.classes)}) probabilities, got shape {probs.shape}")
    t, source = resolve_threshold(meta, threshold)
    uses_threshold = meta.multilabel or meta.binary
    rule = decision_indices(probs, positive_index=meta.positive_index, threshold=t, multilabel=meta.multilabel)
    out = []
    for row, decided in zip(probs, rule, strict=True):
        indices = tuple(int(i) for i in np.flatnonzero(decided)) if meta.multilabel else (int(decided),)
        top = int(row.argmax())
        out.append(Decision(
            findings=tuple(meta.classes[i] for i in indices), indices=indices,
            probability=float(max(row[i] for i in indices)) if indices else None,
            threshold=t if uses_threshold else None, threshold_source=source if uses_threshold else None,
            most_probable=meta.classes[top], most_probable_index=top))
    return out


def decide(probabilities: np.ndarray, meta: CheckpointMeta, threshold: float | None = None) -> Decision:
    """The decision for one image's (K,) probabilities."""
    return decide_all(np.asarray(probabilities)[None], meta, threshold)[0]
