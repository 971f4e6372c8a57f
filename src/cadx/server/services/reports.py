"""The study report (PDF, reportlab): one page per image, with the model's test metrics and a fixed notice.

Every user-supplied string (file names, patient id) is escaped before it reaches a reportlab Paragraph, which
would otherwise interpret it as markup.
"""

from __future__ import annotations

import io
from datetime import datetime
from html import escape
from pathlib import Path

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Image, PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from cadx.engine.decision import findings_label
from cadx.server.db.orm import LEGACY_EXPLANATION, Study, StudyImage
from cadx.server.storage import StudyStorage

NOTICE = ("This result was produced by a computer-aided diagnosis model. It supports, and does not replace, "
          "a clinician's judgement: the finding must be confirmed by a qualified clinician before any decision.")
_FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"),)
_METRIC_LABELS = (("accuracy", "Accuracy"), ("auc", "AUC"), ("recall", "Sensitivity (recall)"),
                  ("specificity", "Specificity"), ("precision", "Precision"), ("f1", "F1"))


def _fonts() -> tuple[str, str]:
    """DejaVu when installed (file names in any script render), else reportlab's built-in Helvetica."""
    if "DejaVuSans" in pdfmetrics.getRegisteredFontNames():
        return "DejaVuSans", "DejaVuSans-Bold"
    for folder in _FONT_DIRS:
        regular, bold = folder / "DejaVuSans.ttf", folder / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            pdfmetrics.registerFont(TTFont("DejaVuSans", str(regular)))
            pdfmetrics.registerFont(TTFont("DejaVuSans-Bold", str(bold)))
            # <b> inside a Paragraph looks the bold face up through the family.
            pdfmetrics.registerFontFamily("DejaVuSans", normal="DejaVuSans", bold="DejaVuSans-Bold",
                                          italic="DejaVuSans", boldItalic="DejaVuSans-Bold")
            return "DejaVuSans", "DejaVuSans-Bold"
    return "Helvetica", "Helvetica-Bold"


def _styles() -> dict[str, ParagraphStyle]:
    regular, bold = _fonts()
    base = getSampleStyleSheet()
    return {
        "title": ParagraphStyle("title", parent=base["Title"], fontName=bold, fontSize=16, spaceAfter=6),
        "h": ParagraphStyle("h", parent=base["Heading3"], fontName=bold, spaceBefore=6, spaceAfter=3),
        "body": ParagraphStyle("body", parent=base["BodyText"], fontName=regular, fontSize=9.5, leading=12),
        "notice": ParagraphStyle("notice", parent=base["BodyText"], fontName=bold, fontSize=9, leading=11,
                                 textColor=colors.HexColor("#7a2e00"), borderColor=colors.HexColor("#e0a070"),
                                 borderWidth=0.8, borderPadding=5, spaceBefore=10),
    }


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else str(v))


def study_date(study: Study, image: StudyImage) -> str:
    """The upload date. A DICOM StudyDate is identifying and is not stored (the de-identified copy holds a shifted
    one), except in studies stored before de-identification existed."""
    raw = (image.dicom or {}).get("StudyDate", "")
    if len(raw) == 8 and raw.isdigit():
        return f"{raw[:4]}-{raw[4:6]}-{raw[6:]} (DICOM)"
    return f"{study.created_at:%Y-%m-%d} (uploaded)"


def threshold_label(study: Study) -> str:
    """``0.602 (balanced operating point)``; a custom threshold, or a study from before, shows the number alone."""
    if study.operating_point:
        return f"{study.threshold:.3f} ({study.operating_point} operating point)"
    return f"{study.threshold:.3f}"


def render_report(study: Study, storage: StudyStorage, metrics: dict | None, only: int | None = None) -> bytes:
    """PDF bytes; ``only`` limits the report to one image position."""
    st = _styles()
    images = [i for i in study.images if only is None or i.position == only]
    story: list = []
    for n, image in enumerate(images):
        if n:
            story.append(PageBreak())
        story.extend(_page(study, image, storage, metrics, st))
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=16 * mm, rightMargin=16 * mm, topMargin=14 * mm,
                            bottomMargin=14 * mm, title=f"cadx study {study.id}", author="cadx",
                            subject="Computer-aided diagnosis report")
    doc.build(story)
    return buf.getvalue()


def _page(study: Study, image: StudyImage, storage: StudyStorage, metrics: dict | None,
          st: dict[str, ParagraphStyle]) -> list:
    e = escape
    patient = study.patient_id or "not given"  # the study's one patient id, as in history, filter and API
    out: list = [Paragraph(f"cadx report: study {study.id}, image {image.position + 1} of {len(study.images)}",
                           st["title"])]
    facts = [("Patient ID", patient), ("Study date", study_date(study, image)),
             ("File", image.filename), ("Model", f"{study.model_name} ({study.model_category})"),
             ("Model version", study.model_version), ("Decision threshold", threshold_label(study)),
             ("Generated", f"{datetime.now():%Y-%m-%d %H:%M}")]
    out.append(_table([[Paragraph(f"<b>{e(k)}</b>", st["body"]), Paragraph(e(str(v)), st["body"])]
                       for k, v in facts], [42 * mm, 130 * mm]))
    out.append(Paragraph("Model evaluation", st["h"]))
    if metrics:
        split = e(str(metrics.get("split", "test")))
        header = f"On the {split} split ({metrics.get('n_images', '?')} images): "
        parts = [f"{label} {_fmt(metrics.get(key))}" for key, label in _METRIC_LABELS if key in metrics]
        out.append(Paragraph(e(header + "; ".join(parts)), st["body"]))
    else:
        out.append(Paragraph("No evaluation metrics were shipped with this model.", st["body"]))
    if image.error:
        out.append(Paragraph("Result", st["h"]))
        out.append(Paragraph(f"This file could not be analysed: {e(image.error)}", st["body"]))
        out.append(Paragraph(e(NOTICE), st["notice"]))
        return out
    if image.assessed is False:  # no finding, no heatmap: the model could not judge this image
        out.append(Paragraph("Result", st["h"]))
        out.append(Paragraph(f"<b>Not assessed:</b> {e(image.reason or 'no reason recorded')}", st["body"]))
        out.append(Paragraph(f"The model {e(study.model_name)} asserts no finding for this image; its output is not "
                             "reported because it does not apply.", st["body"]))
        out.append(Paragraph("Image", st["h"]))
        picture = _picture(storage.artefact(study.id, image.position, "image"), 84 * mm)
        out.append(Paragraph(picture, st["body"]) if isinstance(picture, str) else picture)
        out.append(Paragraph(e(NOTICE), st["notice"]))
        return out
    if image.warning:  # studies stored before "not assessed" existed
        out.append(Paragraph(f"<b>Caution:</b> {e(image.warning)}", st["body"]))
    method = image.explanation or LEGACY_EXPLANATION
    out.append(Paragraph("Image and heatmap", st["h"]))
    pictures = [_picture(storage.artefact(study.id, image.position, name), 84 * mm) for name in ("image", "overlay")]
    out.append(Table([pictures, [Paragraph("Image", st["body"]),
                                 Paragraph(f"{e(method)} for '{e(image.target_class or '-')}'", st["body"])]],
                     colWidths=[88 * mm, 88 * mm]))
    out.append(Paragraph("Class probabilities", st["h"]))
    probs = image.probabilities or {}
    rows = [[Paragraph("<b>Class</b>", st["body"]), Paragraph("<b>Probability</b>", st["body"])]]
    rows += [[Paragraph(e(c), st["body"]), Paragraph(f"{p:.3f}", st["body"])]
             for c, p in sorted(probs.items(), key=lambda kv: -kv[1])]
    out.append(_table(rows, [90 * mm, 40 * mm], header=True))
    decision = findings_label(image.decision or [])
    out.append(Spacer(1, 4))
    out.append(Paragraph(f"<b>Decision at threshold {e(threshold_label(study))}:</b> {e(decision)} "
                         f"(most probable: {e(image.predicted_class or '-')}, {image.probability or 0:.3f})",
                         st["body"]))
    if image.uncertain:
        out.append(Paragraph(f"<b>Uncertain — review:</b> {e(image.uncertain_reason or 'no reason recorded')}",
                             st["body"]))
    out.append(Paragraph(e(NOTICE), st["notice"]))
    return out


def _picture(path: Path | None, side: float) -> Image | str:
    if path is None:
        return "(image missing)"
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        w, h = im.size
    scale = side / max(w, h)
    return Image(str(path), width=w * scale, height=h * scale)


def _table(rows: list, widths: list[float], header: bool = False) -> Table:
    table = Table(rows, colWidths=widths, hAlign="LEFT")
    style = [("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#bbbbbb")),
             ("VALIGN", (0, 0), (-1, -1), "MIDDLE")]
    if header:
        style.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef5")))
    table.setStyle(TableStyle(style))
    return table
