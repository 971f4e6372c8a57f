"""Study use cases, run in a worker thread: analyse the uploads, then database and files together or not at all."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from cadx.engine.decision import resolve_operating_point
from cadx.server.context import AppContext
from cadx.server.db.orm import ImageFinding, Study, StudyImage, User
from cadx.server.db.repository import Repository
from cadx.server.model_store import LoadedModel, ModelEntry
from cadx.server.services.analysis import ImageAnalysis, ImageRejected, analyse_file
from cadx.server.services.deidentify import DeidentificationError, StudyDeidentifier
from cadx.server.services.strip_metadata import MetadataError, store_without_metadata
from cadx.server.storage import FILE_MODE, ORIGINAL_SUFFIX, private_dir, write_private

log = logging.getLogger(__name__)


@dataclass
class Upload:
    """A received file: saved at ``path``, or already refused (size) with ``error``."""

    filename: str
    path: Path | None
    error: str | None = None
    status: int = 422


class NothingAnalysed(Exception):
    """Every file of the request was refused: nothing is stored and the request fails as a whole."""

    def __init__(self, errors: list[tuple[str, str]], status: int) -> None:
        super().__init__("; ".join(f"{name}: {reason}" for name, reason in errors))
        self.errors = errors
        self.status = status


@dataclass(frozen=True)
class StudyRequest:
    """What the clinician sent besides the files."""

    model_id: str
    threshold: float | None = None  # a custom one
    operating_point: str | None = None  # a named one of the model's; neither: the model's default
    patient_id: str | None = None  # typed; kept only in the database
    patient_id_from_header: bool = False  # no typed id: take the DICOM files' PatientID (one patient only)
    note: str | None = None
    idempotency_key: str | None = None
    address: str | None = None  # the client's, for the audit trail


class PatientMismatch(Exception):
    """The header's PatientID was asked for, but the files name several patients."""


def create_study(ctx: AppContext, user_id: int, request: StudyRequest, uploads: list[Upload],
                 staging: Path) -> tuple[int, bool]:
    """Analyse every upload (a bad one does not stop the others), store the study; ``(id, replayed)``, where
    ``replayed`` says the request's Idempotency-Key had created this study already.

    Artefacts go to ``staging/<n>/`` (owner-only, fsynced); DICOM originals are stored de-identified. The caller
    discards ``staging`` after an error (after a successful publish it is gone already).
    """
    if request.idempotency_key:
        with ctx.session_factory() as session:
            done = Repository(session).idempotent_study(user_id, request.idempotency_key)
        if done is not None:
            return done, True
    model = ctx.store.load(request.model_id)
    entry = model.entry
    t, _, point = resolve_operating_point(entry.meta, request.threshold, operating_point=request.operating_point)
    others = [e for e in ctx.store.entries() if e.id != entry.id]  # to suggest one when this one's scope refuses
    settings = ctx.settings
    deidentifier = StudyDeidentifier()  # one per study: UIDs and pseudonyms consistent within it
    pixel_budget, deadline = settings.max_request_pixels, time.monotonic() + settings.max_request_seconds
    images: list[StudyImage] = []
    refused: list[tuple[str, str, int]] = []
    header_ids: set[str] = set()
    for position, upload in enumerate(uploads):
        row = StudyImage(position=position, filename=upload.filename, has_features=False)
        images.append(row)
        if upload.error or upload.path is None:
            row.error = upload.error or "not received"
            refused.append((upload.filename, row.error, upload.status))
            continue
        try:
            result = _analyse_within_budget(ctx, model, upload.path, request, others, pixel_budget, deadline)
            pixel_budget -= result.width * result.height
            folder = private_dir(staging / str(position))
            _store_original(upload.path, result.kind, folder, deidentifier)
        except ImageRejected as exc:
            row.error = exc.reason
            refused.append((upload.filename, exc.reason, exc.status))
            shutil.rmtree(staging / str(position), ignore_errors=True)
            continue
        except Exception:  # a server fault on one file must not lose the others
            log.exception("analysing image %s of a study failed", position)
            row.error = "internal error while analysing this image"
            refused.append((upload.filename, row.error, 500))
            shutil.rmtree(staging / str(position), ignore_errors=True)
            continue
        for name, data in result.files.items():
            write_private(folder / name, data)
        if result.header_patient_id:
            header_ids.add(result.header_patient_id)
        row.kind, row.width, row.height = result.kind, result.width, result.height
        decision = result.decision
        # The most probable class and its probability are kept whether or not the image was assessed (for the
        # record); the findings are empty when it was not, so the history filter never matches it.
        row.predicted_class = decision.most_probable
        row.probability = result.probabilities[decision.most_probable]
        row.decision = list(decision.findings)
        row.findings = [ImageFinding(class_name=c) for c in decision.findings]  # what the history filter matches
        row.assessed, row.reason = decision.assessed, decision.reason
        row.probabilities, row.target_class = result.probabilities, result.target_class
        row.has_features, row.seconds, row.dicom = "features.png" in result.files, result.seconds, result.dicom
        row.warning = result.warning
        row.uncertain, row.uncertain_reason = decision.uncertain, decision.uncertain_reason
        row.explanation = result.explanation
    if len(refused) == len(uploads):
        statuses = {s for _, _, s in refused}
        raise NothingAnalysed([(n, r) for n, r, _ in refused], statuses.pop() if len(statuses) == 1 else 422)
    patient_id = request.patient_id
    if patient_id is None and request.patient_id_from_header:
        if len(header_ids) > 1:
            raise PatientMismatch(f"the DICOM files name {len(header_ids)} different patients: upload each "
                                  "patient's images as a study of its own, or type the patient id")
        patient_id = next(iter(header_ids), None)
    uploads_dir = staging / "uploads"
    if uploads_dir.exists():
        shutil.rmtree(uploads_dir)

    study = Study(created_by_id=user_id, patient_id=patient_id, note=request.note, model_id=entry.id,
                  model_name=entry.title, model_version=entry.version, model_category=entry.category, threshold=t,
                  operating_point=point, classes=entry.classes, seconds=sum(i.seconds or 0.0 for i in images),
                  images=images)
    return _persist(ctx, user_id, request, study, staging)


def _persist(ctx: AppContext, user_id: int, request: StudyRequest, study: Study, staging: Path) -> tuple[int, bool]:
    """Row flushed (id known), folder renamed into place, then commit: see ``storage`` for why every crash point
    is repaired at start. A concurrent retry with the same key loses the unique constraint and returns the other."""
    with ctx.storage.writing(), ctx.session_factory() as session:
        repo = Repository(session)
        repo.add_study(study)
        repo.audit(repo.user_by_id(user_id), "create", study.id,
                   f"{len(study.images)} file(s), model {study.model_id}", request.address)
        if request.idempotency_key:
            repo.add_idempotency_key(user_id, request.idempotency_key, study.id)
        ctx.storage.publish(staging, study.id)
        try:
            repo.commit()
        except Exception as exc:
            repo.rollback()
            ctx.storage.unpublish(study.id)
            if isinstance(exc, IntegrityError) and request.idempotency_key:
                done = repo.idempotent_study(user_id, request.idempotency_key)
                if done is not None:
                    return done, True
            raise
    return study.id, False


def _analyse_within_budget(ctx: AppContext, model: LoadedModel, path: Path, request: StudyRequest,
                           others: list[ModelEntry], pixel_budget: int, deadline: float) -> ImageAnalysis:
    """One file, within what is left of the request's pixel and time budgets (a cheap upload must not buy
    minutes of decoding)."""
    settings = ctx.settings
    if time.monotonic() > deadline:
        raise ImageRejected(f"not analysed: this request used up its {settings.max_request_seconds:g} s of "
                            "analysis time; send the remaining files in another request", status=413)
    limit = min(settings.max_pixels, pixel_budget)
    try:
        return analyse_file(model, path, threshold=request.threshold, operating_point=request.operating_point,
                            max_pixels=max(limit, 1), feature_maps=settings.feature_maps, others=others)
    except ImageRejected as exc:
        if exc.status == 413 and limit < settings.max_pixels:
            raise ImageRejected(f"{exc.reason}: the request's budget of {settings.max_request_pixels} pixels is "
                                "used up; send the remaining files in another request", status=413) from None
        raise


def _store_original(upload: Path, kind: str, folder: Path, deidentifier: StudyDeidentifier) -> None:
    """DICOM: a de-identified copy; PNG, JPEG, TIFF: a copy without metadata (EXIF, XMP, text chunks). The
    uploaded file is not kept; the copy is owner-only."""
    dest = folder / f"original{ORIGINAL_SUFFIX.get(kind, '')}"
    if kind == "dicom":
        try:
            deidentifier.file(upload, dest)
        except DeidentificationError as exc:
            raise ImageRejected(str(exc)) from None
        os.chmod(dest, FILE_MODE)
        upload.unlink()
    else:
        try:
            store_without_metadata(upload, kind, dest)
        except MetadataError as exc:
            raise ImageRejected(f"cannot remove the image's metadata: {exc}") from None
        os.chmod(dest, FILE_MODE)
        upload.unlink()


def delete_study(ctx: AppContext, repo: Repository, study: Study, user: User, address: str | None = None) -> None:
    """Database row and files go together: the folder is set aside, restored if the commit fails (or at the next
    start, after a crash)."""
    with ctx.storage.writing():
        _delete(ctx, repo, study, user, address)


def _delete(ctx: AppContext, repo: Repository, study: Study, user: User, address: str | None) -> None:
    study_id = study.id
    aside = ctx.storage.set_aside(study_id)
    try:
        repo.delete_study(study)
        repo.audit(user, "delete", study_id, f"patient {study.patient_id or '-'}, {len(study.images)} image(s)",
                   address)
        repo.commit()
    except Exception:
        repo.rollback()
        ctx.storage.restore(aside, study_id)
        raise
    ctx.storage.purge(aside)
