"""Studies: upload images for a model, list and open past studies, their images, PDF report, deletion, audit."""

from __future__ import annotations

import logging
import math
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Header, Query, Request, Response, UploadFile, status
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from cadx.engine.checkpoint import CheckpointError
from cadx.server.context import AppContext
from cadx.server.db.orm import Study
from cadx.server.db.repository import AuditAction, Repository, StudyFilter
from cadx.server.deps import (
    MAX_ID,
    MAX_POSITION,
    AdminUser,
    Ctx,
    CurrentUser,
    PageNumber,
    Position,
    Repo,
    StudyId,
    client_address,
)
from cadx.server.errors import ApiError
from cadx.server.model_store import UnknownModelError
from cadx.server.schemas import AuditOut, ErrorOut, StudyOut, StudyPage, audit_out, study_out, study_summary
from cadx.server.services.audit import audit_csv_rows
from cadx.server.services.reports import render_report
from cadx.server.services.studies import NothingAnalysed, PatientMismatch, StudyRequest, delete_study
from cadx.server.services.uploads import IDEMPOTENCY_KEY, display_text, receive_and_create

log = logging.getLogger(__name__)
router = APIRouter(tags=["studies"])
ERRORS = {code: {"model": ErrorOut} for code in (400, 404, 413, 415, 422, 503)}
MEDIA = {"png": "image/png", "jpeg": "image/jpeg", "dicom": "application/dicom"}


@router.post("/studies", response_model=StudyOut, status_code=status.HTTP_201_CREATED, responses=ERRORS,
             summary="Analyse one or more images with a model; refused files are listed with their reason")
async def create_study_route(
    request: Request, response: Response, ctx: Ctx, user: CurrentUser,
    files: Annotated[list[UploadFile], File(description="PNG, JPEG or DICOM images; repeat the field")],
    model_id: Annotated[str, Form(description="A model id from GET /models")],
    threshold: Annotated[float | None, Form(description="A custom decision threshold in [0, 1]; default: the "
                                                         "model's default operating point")] = None,
    operating_point: Annotated[str | None, Form(max_length=64, description="Decide at this named operating point "
                                                                           "of the model (GET /models lists them); "
                                                                           "not with `threshold`")] = None,
    patient_id: Annotated[str | None, Form(max_length=64)] = None,
    patient_id_from_header: Annotated[bool, Form(description="No patient_id typed: use the DICOM files' "
                                                             "PatientID (all files must name the same)")] = False,
    note: Annotated[str | None, Form(max_length=2000)] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=128, pattern=IDEMPOTENCY_KEY,
                                                  description="Retries with the same key return the study the "
                                                              "first request created (200) instead of a copy")]
    = None,
) -> StudyOut:
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ApiError(422, f"threshold must be between 0 and 1, got {threshold}")  # before any upload is stored
    if threshold is not None and operating_point:
        raise ApiError(422, "give a threshold or an operating point, not both")
    try:
        entry = await run_in_threadpool(ctx.store.entry, model_id)
    except UnknownModelError as exc:
        raise ApiError(404, str(exc)) from None
    if operating_point:
        try:
            entry.meta.operating_point(operating_point)
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
    if len(files) > ctx.settings.max_files:
        raise ApiError(413, f"{len(files)} files sent, at most {ctx.settings.max_files} per study")
    study_request = StudyRequest(model_id=model_id, threshold=threshold, operating_point=operating_point or None,
                                 patient_id=display_text(patient_id or "") or None,
                                 patient_id_from_header=patient_id_from_header,
                                 note=(note or "").strip() or None, idempotency_key=idempotency_key,
                                 address=client_address(request))
    try:
        study_id, replayed = await run_in_threadpool(receive_and_create, ctx, user.id, study_request,
                                                     [(f.filename, f.file) for f in files])
    except NothingAnalysed as exc:
        raise ApiError(exc.status, str(exc), exc.errors) from None
    except PatientMismatch as exc:
        raise ApiError(422, str(exc)) from None
    except UnknownModelError as exc:
        raise ApiError(404, str(exc)) from None
    except CheckpointError:
        log.exception("model %s cannot be loaded", model_id)
        raise ApiError(503, f"model '{model_id}' cannot be loaded (see the server log)") from None
    finally:
        for f in files:
            await f.close()
    if replayed:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return await run_in_threadpool(_study_out, ctx, study_id)


@router.get("/studies", response_model=StudyPage, summary="Past studies, newest first, filtered and paged")
def list_studies(
    request: Request, repo: Repo, user: CurrentUser,
    patient_id: str | None = None, model_id: str | None = None,
    finding: Annotated[str | None, Query(description="Any image whose decision asserted this class (the finding "
                                                     "the study's table shows)")] = None,
    predicted_class: Annotated[str | None, Query(description="Deprecated name of `finding`", deprecated=True)]
    = None,
    date_from: Annotated[date | None, Query(description="First day (UTC), YYYY-MM-DD")] = None,
    date_to: Annotated[date | None, Query(description="Last day (UTC), inclusive")] = None,
    page: PageNumber = 1, page_size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> StudyPage:
    flt = StudyFilter(patient_id=patient_id or None, model_id=model_id or None,
                      finding=finding or predicted_class or None, date_from=date_from, date_to=date_to)
    rows, total = repo.list_studies(flt, page, page_size)
    if flt.patient_id:  # a search for one patient is a read of that patient's data
        repo.audit(user, "search", None, f"patient_id {flt.patient_id}: {total} stud{'y' if total == 1 else 'ies'}",
                   client_address(request))
    else:  # a page of the list shows the patient ids of its studies
        repo.audit(user, "list", None, f"page {page}: studies {', '.join(str(s.id) for s in rows) or 'none'}",
                   client_address(request))
    repo.commit()
    return StudyPage(items=[study_summary(s) for s in rows], total=total, page=page, page_size=page_size)


@router.get("/studies/{study_id}", response_model=StudyOut, responses={404: {"model": ErrorOut}},
            summary="One study with every image's result (audited as a view)")
def get_study(study_id: StudyId, request: Request, repo: Repo, user: CurrentUser) -> StudyOut:
    study = _find(repo, study_id)
    repo.audit(user, "view", study.id, None, client_address(request))
    repo.commit()
    return study_out(study)


@router.get("/studies/{study_id}/report.pdf", response_class=Response, responses={404: {"model": ErrorOut}},
            summary="The PDF report: one page per image (audited as an export)")
def get_report(study_id: StudyId, request: Request, ctx: Ctx, repo: Repo, user: CurrentUser,
               image: Annotated[int | None, Query(ge=0, le=MAX_POSITION, description="Only this image position")]
               = None) -> Response:
    study = _find(repo, study_id)
    if image is not None and all(i.position != image for i in study.images):
        raise ApiError(404, f"study {study_id} has no image {image}")
    metrics = _metrics_of(ctx, study.model_id)
    pdf = render_report(study, ctx.storage, metrics, only=image)
    repo.audit(user, "export", study.id, "report.pdf" if image is None else f"report.pdf image {image}",
               client_address(request))
    repo.commit()
    name = f"cadx-study-{study.id}.pdf" if image is None else f"cadx-study-{study.id}-image-{image}.pdf"
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/studies/{study_id}/images/{position}/{artefact}.png", response_class=FileResponse,
            responses={404: {"model": ErrorOut}}, summary="Thumbnail, display image, Grad-CAM overlay or feature maps")
def get_artefact(study_id: StudyId, position: Position, artefact: Literal["thumbnail", "image", "overlay", "features"],
                 request: Request, ctx: Ctx, repo: Repo, user: CurrentUser) -> FileResponse:
    _find(repo, study_id)
    path = ctx.storage.artefact(study_id, position, artefact)
    if path is None:
        raise ApiError(404, f"study {study_id} has no {artefact} for image {position}")
    repo.audit(user, "view_image", study_id, f"{artefact} of image {position}", client_address(request))
    repo.commit()
    return FileResponse(path, media_type="image/png")  # no-store, as every response with patient data


@router.get("/studies/{study_id}/images/{position}/original", response_class=FileResponse,
            responses={404: {"model": ErrorOut}},
            summary="The stored file: PNG and JPEG as uploaded, DICOM de-identified (PS3.15 Annex E Basic Profile)")
def get_original(study_id: StudyId, position: Position, request: Request, ctx: Ctx, repo: Repo,
                 user: CurrentUser) -> FileResponse:
    study = _find(repo, study_id)
    image = next((i for i in study.images if i.position == position), None)
    path = ctx.storage.original(study_id, position)
    if image is None or path is None:
        raise ApiError(404, f"study {study_id} has no stored file {position}")
    repo.audit(user, "download", study_id, f"original of image {position}", client_address(request))
    repo.commit()
    return FileResponse(path, media_type=MEDIA.get(image.kind or "", "application/octet-stream"),
                        filename=image.filename)


@router.delete("/studies/{study_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}}, summary="Delete a study (admin)")
def remove_study(study_id: StudyId, request: Request, ctx: Ctx, repo: Repo, user: AdminUser) -> Response:
    delete_study(ctx, repo, _find(repo, study_id), user, client_address(request))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/audit", response_model=list[AuditOut], summary="Audit trail, newest first (admin)")
def list_audit(request: Request, repo: Repo, user: AdminUser,
               study_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None, action: AuditAction | None = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[AuditOut]:
    events = [audit_out(e) for e in repo.list_audit(study_id, action, limit)]
    repo.audit(user, "audit_view", study_id, f"action {action or 'any'}, {len(events)} row(s)", client_address(request))
    repo.commit()
    return events


@router.get("/audit/export.csv", response_class=StreamingResponse,
            summary="The whole audit trail (or a date range) as CSV, oldest first (admin; audited itself)")
def export_audit(request: Request, ctx: Ctx, repo: Repo, user: AdminUser,
                 date_from: Annotated[date | None, Query(description="First day (UTC), YYYY-MM-DD")] = None,
                 date_to: Annotated[date | None, Query(description="Last day (UTC), inclusive")] = None,
                 ) -> StreamingResponse:
    repo.audit(user, "audit_export", None, f"from {date_from or 'start'} to {date_to or 'now'}",
               client_address(request))
    repo.commit()
    rows = audit_csv_rows(ctx.session_factory, date_from, date_to)  # its own session: the stream outlives this one
    return StreamingResponse(rows, media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="cadx-audit.csv"'})


def _find(repo: Repository, study_id: int) -> Study:
    study = repo.get_study(study_id)
    if study is None:
        raise ApiError(404, f"no study {study_id}")
    return study


def _metrics_of(ctx: AppContext, model_id: str) -> dict | None:
    try:
        return ctx.store.entry(model_id).metrics
    except UnknownModelError:
        return None  # the model was removed since; the report says no metrics


def _study_out(ctx: AppContext, study_id: int) -> StudyOut:
    with ctx.session_factory() as session:
        study = Repository(session).get_study(study_id)
        assert study is not None
        return study_out(study)
