"""Study use cases, run in a worker thread: analyse the uploads, then database and files together or not at all."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from cadx.engine.decision import resolve_threshold
from cadx.server.context import AppContext
from cadx.server.db.orm import ImageFinding, Study, StudyImage, User
from cadx.server.db.repository import Repository
from cadx.server.services.analysis import ImageRejected, analyse_file
from cadx.server.storage import ORIGINAL_SUFFIX

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


def create_study(ctx: AppContext, user_id: int, model_id: str, threshold: float | None, patient_id: str | None,
                 note: str | None, uploads: list[Upload], staging: Path) -> int:
    """Analyse every upload (a bad one does not stop the others), store the study, return its id.

    Artefacts go to ``staging/<n>/``; the caller discards ``staging`` whatever happens (after a successful
    publish it is gone already).
    """
    model = ctx.store.load(model_id)
    entry = model.entry
    t, _ = resolve_threshold(entry.meta, threshold)
    others = [e for e in ctx.store.entries() if e.id != entry.id]  # to suggest one when this one's scope refuses
    images: list[StudyImage] = []
    refused: list[tuple[str, str, int]] = []
    for position, upload in enumerate(uploads):
        row = StudyImage(position=position, filename=upload.filename, has_features=False)
        images.append(row)
        if upload.error or upload.path is None:
            row.error = upload.error or "not received"
            refused.append((upload.filename, row.error, upload.status))
            continue
        try:
            result = analyse_file(model, upload.path, threshold=t, max_pixels=ctx.settings.max_pixels,
                                  feature_maps=ctx.settings.feature_maps, others=others)
        except ImageRejected as exc:
            row.error = exc.reason
            refused.append((upload.filename, exc.reason, exc.status))
            continue
        except Exception:  # a server fault on one file must not lose the others
            log.exception("analysing %s failed", upload.filename)
            row.error = "internal error while analysing this image"
            refused.append((upload.filename, row.error, 500))
            continue
        folder = staging / str(position)
        folder.mkdir()
        for name, data in result.files.items():
            (folder / name).write_bytes(data)
        shutil.move(str(upload.path), folder / f"original{ORIGINAL_SUFFIX.get(result.kind, '')}")
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
    if len(refused) == len(uploads):
        statuses = {s for _, _, s in refused}
        raise NothingAnalysed([(n, r) for n, r, _ in refused], statuses.pop() if len(statuses) == 1 else 422)
    uploads_dir = staging / "uploads"
    if uploads_dir.exists():
        shutil.rmtree(uploads_dir)

    study = Study(created_by_id=user_id, patient_id=patient_id, note=note, model_id=entry.id, model_name=entry.title,
                  model_version=entry.version, model_category=entry.category, threshold=t, classes=entry.classes,
                  seconds=sum(i.seconds or 0.0 for i in images), images=images)
    with ctx.session_factory() as session:
        repo = Repository(session)
        repo.add_study(study)
        user = repo.user_by_id(user_id)
        repo.audit(user, "create", study.id, f"{len(images)} file(s), model {entry.id}")
        repo.commit()
        try:
            ctx.storage.publish(staging, study.id)
        except OSError:
            log.exception("storing study %s failed; removing it again", study.id)
            repo.delete_study(study)
            repo.commit()
            raise
    return study.id


def delete_study(ctx: AppContext, repo: Repository, study: Study, user: User) -> None:
    """Database row and files go together: the folder is set aside, restored if the commit fails."""
    study_id = study.id
    aside = ctx.storage.set_aside(study_id)
    try:
        repo.delete_study(study)
        repo.audit(user, "delete", study_id, f"patient {study.patient_id or '-'}, {len(study.images)} image(s)")
        repo.commit()
    except Exception:
        repo.rollback()
        ctx.storage.restore(aside, study_id)
        raise
    ctx.storage.purge(aside)
