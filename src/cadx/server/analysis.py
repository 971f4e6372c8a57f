"""One uploaded file through the engine: type check by content, decode, predict, Grad-CAM, display PNGs.

Probabilities come from ``Predictor.predict_batch`` exactly as in ``cadx predict``, so the page and the command
line cannot disagree; the explainer adds the heatmap and feature maps.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cadx.data.readers import UnreadableImageError, read_dicom_metadata, read_image, sniff_image_kind
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
    predicted_class: str
    probability: float
    decision: list[str]
    target_class: str | None
    seconds: float
    dicom: dict[str, str] | None
    files: dict[str, bytes]  # artefact file name -> PNG bytes


def check_kind(path: Path) -> str:
    kind = sniff_image_kind(path)
    if kind not in ALLOWED_KINDS:
        found = f"{kind.upper()} image" if kind else "unknown content"
        raise ImageRejected(f"not a PNG, JPEG or DICOM image (by content: {found})", status=415)
    return kind


def analyse_file(model: LoadedModel, path: Path, *, threshold: float, max_pixels: int,
                 feature_maps: int) -> ImageAnalysis:
    """Raises ImageRejected for bad input; anything else is a server fault."""
    kind = check_kind(path)
    predictor = model.predictor
    try:
        image = read_image(path, window=predictor.pre.window, max_pixels=max_pixels)
    except UnreadableImageError as exc:
        too_big = "pixels" in exc.reason and "limit" in exc.reason
        raise ImageRejected(exc.reason, status=413 if too_big else 422) from None
    dicom = None
    if kind == "dicom":
        try:
            header = read_dicom_metadata(path)
        except (UnreadableImageError, ValueError, OSError):
            header = {}
        dicom = {k: header[k] for k in DICOM_FIELDS if header.get(k)}
    start = time.perf_counter()
    with model.lock:
        probs = predictor.predict_batch(predictor.prepare(image)[None])[0]
        explanation = model.explainer.explain(image, target=None, feature_maps=feature_maps)
    seconds = time.perf_counter() - start
    classes = predictor.classes
    top = int(np.argmax(probs))
    files = {"image.png": png_bytes(image, DISPLAY_SIDE), "thumb.png": png_bytes(image, THUMB_SIDE),
             "overlay.png": explanation.overlay_png}
    if explanation.feature_maps_png:
        files["features.png"] = explanation.feature_maps_png
    return ImageAnalysis(
        kind=kind, width=int(image.shape[1]), height=int(image.shape[0]),
        probabilities={c: float(p) for c, p in zip(classes, probs, strict=True)},
        predicted_class=classes[top], probability=float(probs[top]),
        decision=predictor.decide(probs, threshold), target_class=explanation.target_class,
        seconds=seconds, dicom=dicom or None, files=files)


def png_bytes(image: np.ndarray, max_side: int) -> bytes:
    """The decoded image as a PNG no larger than ``max_side`` (display and report use, not diagnosis)."""
    pil = Image.fromarray(image)
    pil.thumbnail((max_side, max_side), Image.BILINEAR)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
