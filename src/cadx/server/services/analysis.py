"""One uploaded file through the engine: type check by content, decode, predict, decide, Grad-CAM, display PNGs.

The pixels are read by the model's ``Predictor`` and the probabilities, the decision and the heatmap come from one
Grad-CAM pass of its explainer, on the same preprocessing and the same ``decide`` as ``cadx predict``, so the page
and the command line agree.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cadx.data.readers import UnreadableImageError, read_header_if_dicom, sniff_image_kind
from cadx.engine.decision import Decision
from cadx.server.model_store import LoadedModel

ALLOWED_KINDS = {"png": "PNG", "jpeg": "JPEG", "dicom": "DICOM"}
DISPLAY_SIDE = 1024
THUMB_SIDE = 256
DICOM_FIELDS = ("PatientID", "StudyDate", "Modality", "BodyPartExamined", "StudyDescription", "SeriesDescription")


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
    decision: Decision  # computed once here; the database row, the card and the PDF read it
    target_class: str | None
    seconds: float
    dicom: dict[str, str] | None
    warning: str | None  # the DICOM header contradicts the model's category
    files: dict[str, bytes]  # artefact file name -> PNG bytes


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


def analyse_file(model: LoadedModel, path: Path, *, threshold: float, max_pixels: int,
                 feature_maps: int) -> ImageAnalysis:
    """Raises ImageRejected for bad input; anything else is a server fault."""
    kind = check_kind(path)
    predictor = model.predictor
    try:
        image = predictor.read(path, max_pixels=max_pixels)
    except UnreadableImageError as exc:
        too_big = "pixels" in exc.reason and "limit" in exc.reason
        raise ImageRejected(exc.reason, status=413 if too_big else 422) from None
    header = read_header_if_dicom(path)
    dicom = {k: header[k] for k in DICOM_FIELDS if header.get(k)}
    warning = predictor.scope_warning(path, image, header)
    start = time.perf_counter()
    with model.lock:
        # One forward pass gives the probabilities, the decision at the study's threshold and the heatmap of the
        # finding shown to the clinician.
        explanation = model.explainer.explain(image, decide=lambda p: predictor.decide(p, threshold),
                                              feature_maps=feature_maps)
    seconds = time.perf_counter() - start
    assert explanation.decision is not None
    files = {"image.png": png_bytes(image, DISPLAY_SIDE), "thumb.png": png_bytes(image, THUMB_SIDE),
             "overlay.png": explanation.overlay_png}
    if explanation.feature_maps_png:
        files["features.png"] = explanation.feature_maps_png
    return ImageAnalysis(
        kind=kind, width=int(image.shape[1]), height=int(image.shape[0]),
        probabilities={c: float(p) for c, p in zip(predictor.classes, explanation.probabilities, strict=True)},
        decision=explanation.decision, target_class=explanation.target_class,
        seconds=seconds, dicom=dicom or None, warning=warning, files=files)


def png_bytes(image: np.ndarray, max_side: int) -> bytes:
    """The decoded image as a PNG no larger than ``max_side`` (display and report use, not diagnosis)."""
    pil = Image.fromarray(image)
    pil.thumbnail((max_side, max_side), Image.BILINEAR)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
