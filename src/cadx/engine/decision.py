"""One decision per image: probabilities in, a small immutable result out (the finding(s) asserted, the probability
of that finding, the threshold used, the operating point it belongs to and where it came from, and whether the
answer is uncertain).

The rule lives here once (``decision_indices``), the threshold fallback once (``resolve_operating_point``) and the
uncertainty rule once (``uncertainty_reason``, margin ``UNCERTAINTY_MARGIN``). The CLI,
evaluation, the explainer's default target, the server card, the database row, the PDF and the history filter
all read a :class:`Decision`; none of them re-derives it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cadx.engine.meta import CheckpointMeta

# An answer is "uncertain - review" when its calibrated probability lies within this distance of the threshold
# (multi-class: top two probabilities closer than twice this, the same band for two classes at 0.5). Fixed in
# probability units so that it means the same for every model; what the band holds is measured by `cadx evaluate`
# (`uncertainty` in metrics.json) and reported for the shipped models in benchmarks/calibration/.
UNCERTAINTY_MARGIN = 0.1
FLIP_REASON = "the horizontally mirrored image is decided differently"


def resolve_threshold(meta: CheckpointMeta, requested: float | None = None,
                      source: str = "given") -> tuple[float, str]:
    """The threshold asked for (from ``source``), else the checkpoint's; with where it came from."""
    t, source, _ = resolve_operating_point(meta, requested, source)
    return t, source


def resolve_operating_point(meta: CheckpointMeta, requested: float | None = None, source: str = "given",
                            operating_point: str | None = None) -> tuple[float, str, str | None]:
    """(threshold, where it came from, operating point name): a given threshold (a custom one, no name), else the
    named stored operating point, else the checkpoint's default (``decision_threshold``)."""
    if requested is not None:
        if operating_point is not None:
            raise ValueError("give a threshold or an operating point, not both")
        if not (math.isfinite(requested) and 0.0 <= requested <= 1.0):
            raise ValueError(f"threshold must be between 0 and 1, got {requested}")
        return float(requested), source, None
    if operating_point is not None:
        point = meta.operating_point(operating_point)
        return float(point.threshold), f"checkpoint: {point.source}", point.name
    return float(meta.decision_threshold), f"checkpoint: {meta.threshold_source}", meta.default_operating_point


def uncertainty_reason(row: np.ndarray, meta: CheckpointMeta, threshold: float, decided: np.ndarray,
                       flipped_decided: np.ndarray | None = None,
                       margin: float = UNCERTAINTY_MARGIN) -> str | None:
    """Why one image's answer is uncertain, else None: its probability within ``margin`` of the threshold (binary,
    each multi-label label), the top two within 2 x ``margin`` (multi-class), or the mirrored image decided
    otherwise (``flipped_decided``, when a flip check ran)."""
    reasons = []
    if meta.multilabel:
        near = [meta.classes[i] for i, p in enumerate(row) if abs(p - threshold) < margin]
        if near:
            reasons.append(f"p({', '.join(near)}) within {margin:g} of the threshold {threshold:.3f}")
    elif meta.binary:
        p = float(row[meta.positive_index])
        if abs(p - threshold) < margin:
            reasons.append(f"p({meta.classes[meta.positive_index]}) {p:.3f} within {margin:g} of the threshold "
                           f"{threshold:.3f}")
    elif len(row) > 1:
        first, second = np.sort(row)[::-1][:2]
        if first - second < 2 * margin:
            reasons.append(f"the two most probable classes within {2 * margin:g} of each other ({first:.3f}, "
                           f"{second:.3f})")
    if flipped_decided is not None and not np.array_equal(np.asarray(decided), np.asarray(flipped_decided)):
        reasons.append(FLIP_REASON)
    return "; ".join(reasons) or None


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
    operating_point: str | None = None  # the named operating point whose threshold decided (None: custom / none)
    uncertain: bool = False  # "uncertain - review": near the threshold, or the mirrored image disagrees
    uncertain_reason: str | None = None

    @property
    def label(self) -> str:
        return findings_label(self.findings) if self.assessed else f"not assessed: {self.reason}"

    @property
    def cell(self) -> str:
        return findings_cell(self.findings)


def decide_all(probs: np.ndarray, meta: CheckpointMeta, threshold: float | None = None,
               source: str = "given", reasons: Sequence[str | None] | None = None, *,
               operating_point: str | None = None, flipped: np.ndarray | None = None) -> list[Decision]:
    """A decision for each row of (N, K) calibrated probabilities (``threshold`` from ``source``, else the named
    ``operating_point``'s, else the checkpoint's default).

    ``reasons``: per image, why it cannot be assessed (input quality, scope, out of distribution) or None; an image
    with a reason gets no finding, whatever its probabilities. ``flipped``: the probabilities of the horizontally
    mirrored images, when a flip check ran; a disagreement makes the answer uncertain."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(meta.classes):
        raise ValueError(f"expected (N, {len(meta.classes)}) probabilities, got shape {probs.shape}")
    reasons = list(reasons) if reasons is not None else [None] * len(probs)
    if len(reasons) != len(probs):
        raise ValueError(f"{len(reasons)} reasons for {len(probs)} images")
    t, source, point = resolve_operating_point(meta, threshold, source, operating_point)
    uses_threshold = meta.multilabel or meta.binary
    rule = decision_indices(probs, positive_index=meta.positive_index, threshold=t, multilabel=meta.multilabel)
    if flipped is not None:
        flipped = np.asarray(flipped, dtype=np.float64)
        if flipped.shape != probs.shape:
            raise ValueError(f"flipped probabilities of shape {flipped.shape} for {probs.shape}")
        flipped_rule = decision_indices(flipped, positive_index=meta.positive_index, threshold=t,
                                        multilabel=meta.multilabel)
    out = []
    for n, (row, decided, reason) in enumerate(zip(probs, rule, reasons, strict=True)):
        indices = tuple(int(i) for i in np.flatnonzero(decided)) if meta.multilabel else (int(decided),)
        top = int(row.argmax())
        if reason:
            out.append(Decision(findings=(), indices=(), probability=None, threshold=None, threshold_source=None,
                                most_probable=meta.classes[top], most_probable_index=top, target_index=top,
                                assessed=False, reason=reason))
            continue
        strongest = max(indices, key=lambda i: row[i]) if indices else top
        doubt = uncertainty_reason(row, meta, t, decided, flipped_rule[n] if flipped is not None else None)
        out.append(Decision(
            findings=tuple(meta.classes[i] for i in indices), indices=indices,
            probability=float(row[strongest]) if indices else None,
            threshold=t if uses_threshold else None, threshold_source=source if uses_threshold else None,
            most_probable=meta.classes[top], most_probable_index=top, target_index=strongest,
            operating_point=point if meta.binary else None, uncertain=doubt is not None, uncertain_reason=doubt))
    return out


def decide(probabilities: np.ndarray, meta: CheckpointMeta, threshold: float | None = None,
           source: str = "given", reason: str | None = None, *, operating_point: str | None = None,
           flipped: np.ndarray | None = None) -> Decision:
    """The decision for one image's (K,) probabilities (``reason``: why it cannot be assessed, if it cannot;
    ``flipped``: the mirrored image's probabilities, when a flip check ran)."""
    return decide_all(np.asarray(probabilities)[None], meta, threshold, source, [reason],
                      operating_point=operating_point,
                      flipped=None if flipped is None else np.asarray(flipped)[None])[0]
