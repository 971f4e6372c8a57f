"""One decision per image: probabilities in, a small immutable result out (the finding(s) asserted, the probability
of that finding, the threshold used and where it came from).

The rule lives here once (``decision_indices``) and the threshold fallback once (``resolve_threshold``). The CLI,
evaluation, the explainer's default target, the server card, the database row, the PDF and the history filter
all read a :class:`Decision`; none of them re-derives it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cadx.engine.meta import CheckpointMeta


def resolve_threshold(meta: CheckpointMeta, requested: float | None = None,
                      source: str = "given") -> tuple[float, str]:
    """The threshold asked for (from ``source``), else the checkpoint's; with where it came from."""
    if requested is None:
        return float(meta.decision_threshold), f"checkpoint: {meta.threshold_source}"
    if not (math.isfinite(requested) and 0.0 <= requested <= 1.0):
        raise ValueError(f"threshold must be between 0 and 1, got {requested}")
    return float(requested), source


def findings_label(findings: Sequence[str]) -> str:
    """How a table cell, a card and a report show findings: the class, several joined by ', ', or 'none'."""
    return ", ".join(findings) or "none"


def findings_cell(findings: Sequence[str]) -> str:
    """How a CSV cell stores findings: joined by '|', as a manifest writes labels ('' when none)."""
    return "|".join(findings)


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
    target_index: int  # the class a heatmap explains: the (most probable) finding, else the most probable class
    assessed: bool = True  # False: the image cannot be judged by this model; no finding is asserted
    reason: str | None = None  # why it was not assessed (None when it was)

    @property
    def label(self) -> str:
        return findings_label(self.findings) if self.assessed else f"not assessed: {self.reason}"

    @property
    def cell(self) -> str:
        return findings_cell(self.findings)


def decide_all(probs: np.ndarray, meta: CheckpointMeta, threshold: float | None = None,
               source: str = "given", reasons: Sequence[str | None] | None = None) -> list[Decision]:
    """A decision for each row of (N, K) probabilities (``threshold`` from ``source``, else the checkpoint's).

    ``reasons``: per image, why it cannot be assessed (input quality, scope, out of distribution) or None; an image
    with a reason gets no finding, whatever its probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(meta.classes):
        raise ValueError(f"expected (N, {len(meta.classes)}) probabilities, got shape {probs.shape}")
    reasons = list(reasons) if reasons is not None else [None] * len(probs)
    if len(reasons) != len(probs):
        raise ValueError(f"{len(reasons)} reasons for {len(probs)} images")
    t, source = resolve_threshold(meta, threshold, source)
    uses_threshold = meta.multilabel or meta.binary
    rule = decision_indices(probs, positive_index=meta.positive_index, threshold=t, multilabel=meta.multilabel)
    out = []
    for row, decided, reason in zip(probs, rule, reasons, strict=True):
        indices = tuple(int(i) for i in np.flatnonzero(decided)) if meta.multilabel else (int(decided),)
        top = int(row.argmax())
        if reason:
            out.append(Decision(findings=(), indices=(), probability=None, threshold=None, threshold_source=None,
                                most_probable=meta.classes[top], most_probable_index=top, target_index=top,
                                assessed=False, reason=reason))
            continue
        strongest = max(indices, key=lambda i: row[i]) if indices else top
        out.append(Decision(
            findings=tuple(meta.classes[i] for i in indices), indices=indices,
            probability=float(row[strongest]) if indices else None,
            threshold=t if uses_threshold else None, threshold_source=source if uses_threshold else None,
            most_probable=meta.classes[top], most_probable_index=top, target_index=strongest))
    return out


def decide(probabilities: np.ndarray, meta: CheckpointMeta, threshold: float | None = None,
           source: str = "given", reason: str | None = None) -> Decision:
    """The decision for one image's (K,) probabilities (``reason``: why it cannot be assessed, if it cannot)."""
    return decide_all(np.asarray(probabilities)[None], meta, threshold, source, [reason])[0]
