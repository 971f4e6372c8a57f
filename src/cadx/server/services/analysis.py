"""One uploaded file through the engine: type check by content, decode, assess, predict, decide, Grad-CAM, display
PNGs.

The pixels are read by the model's ``Predictor``, which first says whether the image can be judged at all (input
quality, the DICOM header or colour against the model's scope, the model's out-of-distribution score). An image it
can judge gets its probabilities, decision and heatmap from one Grad-CAM pass of the explainer, on the same
preprocessing and the same ``decide`` as ``cadx predict``, so the page and the command line agree. An image it
cannot judge is "not assessed": its probabilities are kept for the record, no finding is asserted and no heatmap of a
finding is drawn.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cadx.data.readers import UnreadableImageError, read_header_if_dicom, sniff_image_kind
from cadx.engine.decision import Decision, decide
from cadx.engine.scope import SCOPES, scope_warning
from cadx.server.model_store import LoadedModel, ModelEntry

ALLOWED_KINDS = {"png": "PNG", "jpeg": "JPEG", "dicom": "DICOM"}
DISPLAY_SIDE = 1024
THUMB_SIDE = 256
# Stored with the image row: only what de-identification keeps as it is (PS3.15 E: Modality and BodyPartExamined
# are retained). Dates are shifted and descriptions removed in the stored copy, so the database must not keep the
# originals either. PatientID is not here: the study's one patient id is the typed one (or, when asked for, this
# header value), kept on the study alone, so history, filter, API and PDF show the same.
DICOM_FIELDS = ("Modality", "BodyPartExamined")


class ImageRejected(Exception):
    """A file that cannot be analysed; ``status`` is the HTTP code when it is the only file of a request."""

    def __init__(self, reason: str, status: int = 422) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass
class ImageAnalysis:
    kind: str
    width: int
    height: int
    probabilities: dict[str, float]
    decision: Decision  # computed once here; the database row, the card and the PDF read it (``assessed``, ``reason``)
    target_class: str | None  # the class the heatmap explains; None when no heatmap was made (not assessed)
    seconds: float
    dicom: dict[str, str] | None
    warning: str | None  # no longer set: a scope mismatch is now a reason for not assessing (decision.reason)
    files: dict[str, bytes]  # artefact file name -> PNG bytes
    header_patient_id: str | None = None  # the DICOM PatientID, used only when the clinician asks for it
    explanation: str | None = None  # what drew the heatmap ("Layer-CAM at layer2"); None without one


# Only to name what was sent instead, in the error message.
_OTHER_MAGIC = ((b"GIF8", "GIF image"), (b"%PDF", "PDF document"), (b"PK\x03\x04", "ZIP archive"),
                (b"\x1f\x8b", "gzip archive"))


def check_kind(path: Path) -> str:
    """The file's type from its content (never its name); only PNG, JPEG and DICOM are accepted."""
    kind = sniff_image_kind(path)
    if kind not in ALLOWED_KINDS:
        raise ImageRejected(f"not a PNG, JPEG or DICOM image (content: {_describe(path, kind)})", status=415)
    return kind


def _describe(path: Path, kind: str | None) -> str:
    if kind:
        return f"{kind.upper()} image"
    with path.open("rb") as fh:
        head = fh.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP image"
    return next((label for magic, label in _OTHER_MAGIC if head.startswith(magic)), "unknown")


def analyse_file(model: LoadedModel, path: Path, *, threshold: float | None = None,
                 operating_point: str | None = None, max_pixels: int, feature_maps: int,
                 others: Sequence[ModelEntry] = ()) -> ImageAnalysis:
    """Raises ImageRejected for bad input; anything else is a server fault. ``threshold`` (custom) or
    ``operating_point`` (named), neither: the model's default. ``others``: the other installed models, one of which
    is suggested when this one's scope rejects a DICOM that another's accepts."""
    kind = check_kind(path)
    predictor = model.predictor
    try:
        image = predictor.read(path, max_pixels=max_pixels)
    except UnreadableImageError as exc:
        too_big = "pixels" in exc.reason and "limit" in exc.reason
        raise ImageRejected(without_paths(exc.reason, path), status=413 if too_big else 422) from None
    header = read_header_if_dicom(path)
    dicom = {k: header[k] for k in DICOM_FIELDS if header.get(k)}
    problem = predictor.input_problem(path, image, header)
    if problem and problem == scope_warning(model.entry.category, header, image):
        problem += suggest_models(model.entry, others, header, image)
    meta = predictor.meta
    files = {"image.png": png_bytes(image, DISPLAY_SIDE), "thumb.png": png_bytes(image, THUMB_SIDE)}
    start = time.perf_counter()
    with model.lock:
        prepared = predictor.prepare(image)
        reason = predictor.assess(prepared, problem)
        if reason is None:
            # The flip check (a forward pass on the mirrored image) may make the answer "uncertain - review"; one
            # more pass gives the probabilities, the decision and the heatmap of the finding shown to the clinician.
            flipped = predictor.predict_flipped(prepared[None])[0]
            explanation = model.explainer.explain(
                image, decide=lambda p: decide(p, meta, threshold, operating_point=operating_point, flipped=flipped),
                feature_maps=feature_maps)
            probabilities, decision = explanation.probabilities, explanation.decision
            target_class: str | None = explanation.target_class
            files["overlay.png"] = explanation.overlay_png
            if explanation.feature_maps_png:
                files["features.png"] = explanation.feature_maps_png
        else:  # no finding, so no heatmap of one: the probabilities are kept for the record only
            probabilities = predictor.predict_batch(prepared[None])[0]
            decision = decide(probabilities, meta, threshold, reason=reason, operating_point=operating_point)
            target_class = None
    seconds = time.perf_counter() - start
    assert decision is not None
    return ImageAnalysis(
        kind=kind, width=int(image.shape[1]), height=int(image.shape[0]),
        probabilities={c: float(p) for c, p in zip(predictor.classes, probabilities, strict=True)},
        decision=decision, target_class=target_class, seconds=seconds, dicom=dicom or None, warning=None,
        files=files, header_patient_id=str(header.get("PatientID") or "").strip()[:64] or None,
        explanation=model.explainer.describe() if target_class is not None else None)


_ABSOLUTE_PATH = re.compile(r"""(?:[A-Za-z]:)?[\\/](?:[^\s'"\\/]+[\\/])+[^\s'"]*""")


def without_paths(reason: str, path: Path) -> str:
    """A decoder's message without any server path: the upload's own path becomes "the file" and any other
    absolute path "<path>" (the caller names the file by its uploaded name beside the reason)."""
    for spelled in {str(path), str(path.resolve()), path.as_posix()}:
        reason = reason.replace(f" '{spelled}'", "").replace(f"'{spelled}'", "the file").replace(spelled, "the file")
    return _ABSOLUTE_PATH.sub("<path>", reason)


def suggest_models(current: ModelEntry, others: Sequence[ModelEntry], header: Mapping[str, object],
                   image: np.ndarray) -> str:
    """``"; it looks like a Brain MRI image: try brain_mri_tumor"`` when the DICOM header names a Modality and the
    scope of another installed model's category accepts the image; else ''. Only categories with a known scope
    count (a category without one accepts everything, which says nothing)."""
    if not str(header.get("Modality") or "").strip():
        return ""
    fitting: dict[str, list[str]] = {}
    for entry in others:
        if (entry.id != current.id and entry.category != current.category and entry.category in SCOPES
                and scope_warning(entry.category, header, image) is None):
            fitting.setdefault(entry.category, []).append(entry.id)
    return "".join(f"; it looks like a {category} image: try {' or '.join(ids)}" for category, ids in fitting.items())


def png_bytes(image: np.ndarray, max_side: int) -> bytes:
    """The decoded image as a PNG no larger than ``max_side`` (display and report use, not diagnosis)."""
    pil = Image.fromarray(image)
    pil.thumbnail((max_side, max_side), Image.BILINEAR)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
