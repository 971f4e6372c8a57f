"""Studies: upload images for a model, list and open past studies, their images, PDF report, deletion, audit."""

from __future__ import annotations

import math
import re
from datetime import date
from pathlib import Path
from typing import IO, Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from cadx.engine.checkpoint import CheckpointError
from cadx.server.context import AppContext
from cadx.server.db.orm import Study
from cadx.server.db.repository import AuditAction, Repository, StudyFilter
from cadx.server.deps import MAX_ID, MAX_POSITION, AdminUser, Ctx, CurrentUser, PageNumber, Position, Repo, StudyId
from cadx.server.errors import ApiError
from cadx.server.model_store import UnknownModelError
from cadx.server.schemas import AuditOut, ErrorOut, StudyOut, StudyPage, audit_out, study_out, study_summary
from cadx.server.services.reports import render_report
from cadx.server.services.studies import NothingAnalysed, Upload, create_study, delete_study

router = APIRouter(tags=["studies"])
ERRORS = {code: {"model": ErrorOut} for code in (400, 404, 413, 415, 422, 503)}
MEDIA = {"png": "image/png", "jpeg": "image/jpeg", "dicom": "application/dicom"}


@router.post("/studies", response_model=StudyOut, status_code=status.HTTP_201_CREATED, responses=ERRORS,
             summary="Analyse one or more images with a model; refused files are listed with their reason")
async def create_study_route(
    ctx: Ctx, user: CurrentUser,
    files: Annotated[list[UploadFile], File(description="PNG, JPEG or DICOM images; repeat the field")],
    model_id: Annotated[str, Form(description="A model id from GET /models")],
    threshold: Annotated[float | None, Form(description="Decision threshold in [0, 1]; default: the model's")]
    = None,
    patient_id: Annotated[str | None, Form(max_length=64)] = None,
    note: Annotated[str | None, Form(max_length=2000)] = None,
) -> StudyOut:
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ApiError(422, f"threshold must be between 0 and 1, got {threshold}")  # before any upload is stored
    try:
        await run_in_threadpool(ctx.store.entry, model_id)
    except UnknownModelError as exc:
        raise ApiError(404, str(exc)) from None
    if len(files) > ctx.settings.max_files:
        raise ApiError(413, f"{len(files)} files sent, at most {ctx.settings.max_files} per study")
    staging = ctx.storage.staging()
    try:
        uploads = await run_in_threadpool(_receive_all, files, staging / "uploads", ctx.settings.max_upload_bytes)
        study_id = await run_in_threadpool(create_study, ctx, user.id, model_id, threshold,
                                           (patient_id or "").strip() or None, (note or "").strip() or None,
                                           uploads, staging)
    except NothingAnalysed as exc:
        raise ApiError(exc.status, str(exc), exc.errors) from None
    except UnknownModelError as exc:
        raise ApiError(404, str(exc)) from None
    except CheckpointError as exc:
        raise ApiError(503, f"model '{model_id}' cannot be loaded: {exc}") from None
    finally:
        ctx.storage.discard(staging)
        for f in files:
            await f.close()
    return await run_in_threadpool(_study_out, ctx, study_id)


@router.get("/studies", response_model=StudyPage, summary="Past studies, newest first, filtered and paged")
def list_studies(
    repo: Repo, _user: CurrentUser,
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
    return StudyPage(items=[study_summary(s) for s in rows], total=total, page=page, page_size=page_size)


@router.get("/studies/{study_id}", response_model=StudyOut, responses={404: {"model": ErrorOut}},
            summary="One study with every image's result (audited as a view)")
def get_study(study_id: StudyId, repo: Repo, user: CurrentUser) -> StudyOut:
    study = _find(repo, study_id)
    repo.audit(user, "view", study.id)
    repo.commit()
    return study_out(study)


@router.get("/studies/{study_id}/report.pdf", response_class=Response, responses={404: {"model": ErrorOut}},
            summary="The PDF report: one page per image (audited as an export)")
def get_report(study_id: StudyId, ctx: Ctx, repo: Repo, user: CurrentUser,
               image: Annotated[int | None, Query(ge=0, le=MAX_POSITION, description="Only this image position")]
               = None) -> Response:
    study = _find(repo, study_id)
    if image is not None and all(i.position != image for i in study.images):
        raise ApiError(404, f"study {study_id} has no image {image}")
    metrics = _metrics_of(ctx, study.model_id)
    pdf = render_report(study, ctx.storage, metrics, only=image)
    repo.audit(user, "export", study.id, "report.pdf" if image is None else f"report.pdf image {image}")
    repo.commit()
    name = f"cadx-study-{study.id}.pdf" if image is None else f"cadx-study-{study.id}-image-{image}.pdf"
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/studies/{study_id}/images/{position}/{artefact}.png", response_class=FileResponse,
            responses={404: {"model": ErrorOut}}, summary="Thumbnail, display image, Grad-CAM overlay or feature maps")
def get_artefact(study_id: StudyId, position: Position, artefact: Literal["thumbnail", "image", "overlay", "features"],
                 ctx: Ctx, repo: Repo, _user: CurrentUser) -> FileResponse:
    _find(repo, study_id)
    path = ctx.storage.artefact(study_id, position, artefact)
    if path is None:
        raise ApiError(404, f"study {study_id} has no {artefact} for image {position}")
    return FileResponse(path, media_type="image/png")  # no-store, as every response with patient data


@router.get("/studies/{study_id}/images/{position}/original", response_class=FileResponse,
            responses={404: {"model": ErrorOut}}, summary="The file as uploaded")
def get_original(study_id: StudyId, position: Position, ctx: Ctx, repo: Repo, _user: CurrentUser) -> FileResponse:
    study = _find(repo, study_id)
    image = next((i for i in study.images if i.position == position), None)
    path = ctx.storage.original(study_id, position)
    if image is None or path is None:
        raise ApiError(404, f"study {study_id} has no stored file {position}")
    return FileResponse(path, media_type=MEDIA.get(image.kind or "", "application/octet-stream"),
                        filename=image.filename)


@router.delete("/studies/{study_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}}, summary="Delete a study (admin)")
def remove_study(study_id: StudyId, ctx: Ctx, repo: Repo, user: AdminUser) -> Response:
    delete_study(ctx, repo, _find(repo, study_id), user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/audit", response_model=list[AuditOut], summary="Audit trail, newest first (admin)")
def list_audit(repo: Repo, _user: AdminUser, study_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
               action: AuditAction | None = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[AuditOut]:
    return [audit_out(e) for e in repo.list_audit(study_id, action, limit)]


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


_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def _clean_name(raw: str | None, position: int) -> str:
    """The client's file name, for display only: no folders, no control characters, at most 255 characters."""
    name = _UNSAFE.sub("", (raw or "").replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return name[:255] or f"file-{position + 1}"


def _receive_all(files: list[UploadFile], folder: Path, limit: int) -> list[Upload]:
    folder.mkdir(parents=True)
    return [_receive(f.file, _clean_name(f.filename, n), folder / f"{n}.upload", limit)
            for n, f in enumerate(files)]


def _receive(source: IO[bytes], name: str, dest: Path, limit: int) -> Upload:
    """Copy with a size cap; an oversized file is refused without keeping any of it."""
    size = 0
    source.seek(0)
    with dest.open("wb") as out:
        while chunk := source.read(1 << 20):
            size += len(chunk)
            if size > limit:
                break
            out.write(chunk)
    if size > limit:
        dest.unlink()
        return Upload(name, None, f"larger than the {limit / 2**20:g} MB upload limit", 413)
    if size == 0:
        dest.unlink()
        return Upload(name, None, "empty file", 422)
    return Upload(name, dest)
