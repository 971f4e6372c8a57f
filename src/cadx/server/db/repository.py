"""All database access of the server lives here: routers and services call these methods, never the session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal

from sqlalchemy import exists, func, select, text
from sqlalchemy.orm import Session, selectinload

from cadx.server.db.orm import AuditEvent, IdempotencyKey, ImageFinding, Study, StudyImage, User

# Every action the audit trail records (the /audit filter offers exactly these).
# Reads of patient data: "view" (a study), "view_image" (thumbnail, image, heatmap, feature maps), "download" (the
# stored original), "export" (the PDF report), "search" (the study list filtered by patient), "list" (a page of the
# unfiltered list: patient ids of up to 100 studies), "audit_view" and "audit_export" (the trail itself).
AuditAction = Literal["create", "view", "view_image", "download", "export", "search", "list", "delete", "login",
                      "login_failed", "login_locked", "logout", "password", "revoke", "unlock", "audit_view",
                      "audit_export"]


@dataclass(frozen=True)
class StudyFilter:
    patient_id: str | None = None
    model_id: str | None = None
    finding: str | None = None  # a class asserted by the decision (what the study's table shows)
    date_from: date | None = None
    date_to: date | None = None  # inclusive


class Repository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # transactions --------------------------------------------------------------------------------------------
    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()

    def ping(self) -> None:
        self.session.execute(text("SELECT 1"))

    # users ---------------------------------------------------------------------------------------------------
    def user_by_id(self, user_id: int) -> User | None:
        return self.session.get(User, user_id)

    def user_by_name(self, username: str) -> User | None:
        return self.session.scalar(select(User).where(User.username == username))

    def count_users(self) -> int:
        return int(self.session.scalar(select(func.count(User.id))) or 0)

    def add_user(self, username: str, password_hash: str, role: str) -> User:
        user = User(username=username, password_hash=password_hash, role=role, active=True)
        self.session.add(user)
        self.session.flush()
        return user

    # studies -------------------------------------------------------------------------------------------------
    def add_study(self, study: Study) -> Study:
        """Adds the study with its images and assigns ids (flush); the caller commits."""
        self.session.add(study)
        self.session.flush()
        return study

    def get_study(self, study_id: int) -> Study | None:
        return self.session.scalar(select(Study).where(Study.id == study_id).options(selectinload(Study.images)))

    def list_studies(self, flt: StudyFilter, page: int, page_size: int) -> tuple[list[Study], int]:
        """Newest first; ``finding`` matches studies where the decision of any image asserted that class."""
        query = select(Study)
        if flt.patient_id:
            query = query.where(Study.patient_id == flt.patient_id)
        if flt.model_id:
            query = query.where(Study.model_id == flt.model_id)
        if flt.finding:
            query = query.where(exists().where(StudyImage.study_id == Study.id, ImageFinding.image_id == StudyImage.id,
                                               ImageFinding.class_name == flt.finding))
        if flt.date_from:
            query = query.where(Study.created_at >= _day_start(flt.date_from))
        if flt.date_to:
            query = query.where(Study.created_at < _day_start(flt.date_to + timedelta(days=1)))
        total = int(self.session.scalar(select(func.count()).select_from(query.subquery())) or 0)
        rows = self.session.scalars(query.options(selectinload(Study.images))
                                    .order_by(Study.created_at.desc(), Study.id.desc())
                                    .offset((page - 1) * page_size).limit(page_size)).all()
        return list(rows), total

    def study_ids(self, ids: list[int]) -> set[int]:
        """Which of ``ids`` are studies (the startup sweep keeps their folders, removes the others)."""
        found: set[int] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found.update(self.session.scalars(select(Study.id).where(Study.id.in_(chunk))).all())
        return found

    def idempotent_study(self, user_id: int, key: str) -> int | None:
        """The study this user's request with ``key`` created, if any."""
        return self.session.scalar(select(IdempotencyKey.study_id).where(IdempotencyKey.user_id == user_id,
                                                                         IdempotencyKey.key == key))

    def add_idempotency_key(self, user_id: int, key: str, study_id: int) -> None:
        self.session.add(IdempotencyKey(user_id=user_id, key=key, study_id=study_id))
        self.session.flush()

    def delete_study(self, study: Study) -> None:
        self.session.delete(study)
        self.session.flush()

    # audit ---------------------------------------------------------------------------------------------------
    def audit(self, user: User | None, action: AuditAction, study_id: int | None, detail: str | None = None,
              address: str | None = None) -> None:
        self.session.add(AuditEvent(user_id=user.id if user else None, username=user.username if user else "-",
                                    action=action, study_id=study_id, detail=(detail or None) and detail[:255],
                                    client_address=(address or None) and address[:64]))
        self.session.flush()

    def iter_audit(self, since: datetime | None = None, until: datetime | None = None,
                   batch: int = 1000) -> Iterator[AuditEvent]:
        """Every event in id order (oldest first), fetched in batches: an export never holds the whole trail."""
        last = 0
        while True:
            query = select(AuditEvent).where(AuditEvent.id > last)
            if since is not None:
                query = query.where(AuditEvent.at >= since)
            if until is not None:
                query = query.where(AuditEvent.at < until)
            rows = list(self.session.scalars(query.order_by(AuditEvent.id).limit(batch)).all())
            if not rows:
                return
            yield from rows
            last = rows[-1].id

    def list_audit(self, study_id: int | None = None, action: str | None = None,
                   limit: int = 200) -> list[AuditEvent]:
        query = select(AuditEvent)
        if study_id is not None:
            query = query.where(AuditEvent.study_id == study_id)
        if action:
            query = query.where(AuditEvent.action == action)
        return list(self.session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)).all())


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.utc)
