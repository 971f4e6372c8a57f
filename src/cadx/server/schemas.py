"""Request/response models of the REST API (kept apart from the ORM models) and their builders."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from cadx.engine.decision import findings_label
from cadx.server.db.orm import LEGACY_EXPLANATION, AuditEvent, Study, StudyImage, User
from cadx.server.model_store import ModelEntry

API = "/api/v1"


class ErrorItem(BaseModel):
    filename: str
    error: str


class ErrorOut(BaseModel):
    detail: str = Field(description="What went wrong, naming the file(s) and reason(s)")
    errors: list[ErrorItem] = Field(default_factory=list, description="One entry per refused file")


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the token expires")


class UserOut(BaseModel):
    id: int
    username: str
    role: str


class HealthOut(BaseModel):
    status: str
    version: str
    database: str
    models: int


class OperatingPointOut(BaseModel):
    name: str = Field(description="balanced (Youden's J), high-sensitivity or high-specificity")
    threshold: float
    criterion: str = Field(description="youden, sensitivity or specificity")
    target: float | None = Field(description="The sensitivity / specificity asked for on validation")
    sensitivity: float | None = Field(description="Reached on the validation split")
    specificity: float | None = Field(description="Reached on the validation split")
    default: bool = Field(description="The point a study uses when none is chosen")


class ModelOut(BaseModel):
    id: str
    title: str
    category: str
    architecture: str
    task: str
    classes: list[str]
    input_size: int = Field(description="Square input side in pixels")
    channels: int
    parameters: int | None
    decision_threshold: float
    threshold_source: str = Field(description="Where the threshold came from, e.g. validation (Youden's J)")
    operating_points: list[OperatingPointOut] = Field(default_factory=list, description="Named thresholds chosen on "
                                                                                         "validation (binary models)")
    version: str
    metrics: dict[str, Any] | None = Field(description="Test metrics from metrics.json (None when absent)")
    has_card: bool
    loaded: bool
    backend: str | None = Field(None, description="Backend of the out-of-distribution and flip-check passes once "
                                                  "loaded (probabilities and heatmap: torch fp32)")


class ModelCategory(BaseModel):
    name: str
    models: list[ModelOut]


class ModelsOut(BaseModel):
    categories: list[ModelCategory]


class ImageResult(BaseModel):
    index: int
    filename: str
    kind: str | None
    width: int | None
    height: int | None
    predicted_class: str | None = Field(description="Most probable class (kept for the record also when the "
                                                    "image was not assessed; then it is no finding)")
    probability: float | None = Field(description="Its probability")
    probabilities: dict[str, float] | None = Field(description="Class -> probability")
    assessed: bool = Field(description="Whether the model judged the image; False when it was not assessed "
                                       "(`reason` says why) or not analysed at all (`error` says why)")
    reason: str | None = Field(description="Why the image was not assessed: input quality, outside the model's "
                                           "scope, or unlike its training images (None when it was assessed)")
    decision: str | None = Field(description="The finding asserted at the study's threshold (None when the image "
                                             "was not assessed or not analysed)")
    decision_classes: list[str] | None = Field(description="Every class asserted at the threshold (multi-label); "
                                                           "[] when the image was not assessed")
    uncertain: bool = Field(False, description="'Uncertain - review': the calibrated probability lies near the "
                                               "threshold, or the mirrored image is decided otherwise")
    uncertain_reason: str | None = Field(None, description="Why it is uncertain (None when it is not)")
    explained_class: str | None = Field(description="Class the heatmap explains (None without heatmap)")
    explanation: str | None = Field(None, description="What drew the heatmap, e.g. 'Layer-CAM at layer2' (None "
                                                      "without heatmap; studies stored before 0007: Grad-CAM)")
    seconds: float | None = Field(description="Inference plus explanation time")
    thumbnail_url: str | None
    image_url: str | None
    heatmap_url: str | None
    feature_maps_url: str | None
    original_url: str | None
    dicom: dict[str, str] | None
    warning: str | None = Field(None, description="Studies stored before 'not assessed' existed: why the result may "
                                                   "not apply (a scope mismatch is now a `reason` instead)")
    error: str | None = Field(description="Why this file was not analysed (None when it was)")


class StudyOut(BaseModel):
    id: int
    created_at: datetime
    created_by: str | None
    patient_id: str | None
    note: str | None
    model_id: str
    model_title: str
    model_version: str
    model_category: str
    classes: list[str]
    threshold: float
    operating_point: str | None = Field(None, description="The named operating point whose threshold decided (None: "
                                                          "a custom threshold, or a model without named points)")
    seconds: float
    report_url: str
    results: list[ImageResult]


class StudySummary(BaseModel):
    id: int
    created_at: datetime
    created_by: str | None
    patient_id: str | None
    model_id: str
    model_title: str
    n_images: int
    n_errors: int
    findings: list[str] = Field(description="Decisions of the analysed images, in order ('not assessed' for an "
                                            "image the model could not judge)")
    report_url: str


class StudyPage(BaseModel):
    items: list[StudySummary]
    total: int
    page: int
    page_size: int


class AuditOut(BaseModel):
    id: int
    at: datetime
    username: str
    action: str
    study_id: int | None
    detail: str | None
    client_address: str | None = Field(None, description="The client's address (the proxy's X-Forwarded-For when "
                                                         "trusted)")


def _finite(x: float | None) -> float | None:
    """NaN (a class absent from validation) is not JSON: None."""
    return x if x is not None and math.isfinite(x) else None


def model_out(entry: ModelEntry, loaded: bool, backend: str | None = None) -> ModelOut:
    meta = entry.meta
    return ModelOut(id=entry.id, title=entry.title, category=entry.category, architecture=meta.model.name,
                    task=meta.task, classes=entry.classes, input_size=meta.preprocessing.image_size,
                    channels=meta.preprocessing.channels, parameters=meta.model.params,
                    decision_threshold=meta.decision_threshold, threshold_source=meta.threshold_source,
                    operating_points=[OperatingPointOut(name=p.name, threshold=p.threshold, criterion=p.criterion,
                                                        target=p.target, sensitivity=_finite(p.sensitivity),
                                                        specificity=_finite(p.specificity),
                                                        default=p.name == meta.default_operating_point)
                                      for p in meta.operating_points],
                    version=entry.version, metrics=entry.metrics, has_card=entry.card is not None, loaded=loaded,
                    backend=backend)


def user_out(user: User) -> UserOut:
    return UserOut(id=user.id, username=user.username, role=user.role)


NOT_ASSESSED = "not assessed"


def is_assessed(image: StudyImage) -> bool:
    """Analysed and judged by the model (a NULL from a row written outside the ORM counts as assessed, as the
    column's server default does)."""
    return image.error is None and image.assessed is not False


def image_label(image: StudyImage) -> str:
    """What the history table shows for an analysed image: its findings, or 'not assessed'."""
    return findings_label(image.decision or []) if is_assessed(image) else NOT_ASSESSED


def image_result(study_id: int, image: StudyImage) -> ImageResult:
    ok = image.error is None
    assessed = is_assessed(image)
    base = f"{API}/studies/{study_id}/images/{image.position}"
    decision = (image.decision or []) if assessed else []
    return ImageResult(
        index=image.position, filename=image.filename, kind=image.kind, width=image.width, height=image.height,
        predicted_class=image.predicted_class, probability=image.probability, probabilities=image.probabilities,
        assessed=assessed, reason=image.reason if ok and not assessed else None,
        decision=findings_label(decision) if assessed else None, decision_classes=decision if ok else None,
        uncertain=bool(image.uncertain) and assessed, uncertain_reason=image.uncertain_reason if assessed else None,
        explained_class=image.target_class if assessed else None,
        explanation=(image.explanation or LEGACY_EXPLANATION) if assessed else None, seconds=image.seconds,
        thumbnail_url=f"{base}/thumbnail.png" if ok else None, image_url=f"{base}/image.png" if ok else None,
        heatmap_url=f"{base}/overlay.png" if assessed else None,
        feature_maps_url=f"{base}/features.png" if assessed and image.has_features else None,
        original_url=f"{base}/original" if ok else None, dicom=image.dicom, warning=image.warning, error=image.error)


def study_out(study: Study) -> StudyOut:
    return StudyOut(
        id=study.id, created_at=study.created_at, created_by=study.created_by.username if study.created_by else None,
        patient_id=study.patient_id, note=study.note, model_id=study.model_id, model_title=study.model_name,
        model_version=study.model_version, model_category=study.model_category, classes=list(study.classes),
        threshold=study.threshold, operating_point=study.operating_point, seconds=study.seconds,
        report_url=f"{API}/studies/{study.id}/report.pdf",
        results=[image_result(study.id, i) for i in study.images])


def study_summary(study: Study) -> StudySummary:
    return StudySummary(
        id=study.id, created_at=study.created_at, created_by=study.created_by.username if study.created_by else None,
        patient_id=study.patient_id, model_id=study.model_id, model_title=study.model_name,
        n_images=len(study.images), n_errors=sum(i.error is not None for i in study.images),
        findings=[image_label(i) for i in study.images if i.error is None],
        report_url=f"{API}/studies/{study.id}/report.pdf")


def audit_out(event: AuditEvent) -> AuditOut:
    return AuditOut(id=event.id, at=event.at, username=event.username, action=event.action,
                    study_id=event.study_id, detail=event.detail, client_address=event.client_address)


class PasswordChangeIn(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024)


class UnlockIn(BaseModel):
    username: str | None = Field(None, max_length=64, description="Account to unlock")
    address: str | None = Field(None, max_length=64, description="Client address to unlock")


class CountOut(BaseModel):
    count: int = Field(description="How many sessions or locks were ended")
