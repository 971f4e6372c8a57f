"""SQLAlchemy 2 ORM models. Types stay portable: SQLite, PostgreSQL and MySQL/MariaDB run the same schema."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Double, ForeignKey, Integer, String, Text, UniqueConstraint, false, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

ROLES = ("admin", "clinician")
LEGACY_EXPLANATION = "Grad-CAM"  # what drew the heatmaps of studies stored before the method was recorded (0007)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC (MySQL has no time zones), always handed back as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=timezone.utc) if value is not None else None


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Study(Base):
    """One upload: a model applied to one or more images."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    patient_id: Mapped[str | None] = mapped_column(String(64), index=True)
    note: Mapped[str | None] = mapped_column(Text)
    model_id: Mapped[str] = mapped_column(String(128), index=True)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    model_category: Mapped[str] = mapped_column(String(64))
    threshold: Mapped[float] = mapped_column(Double)
    # The named operating point whose threshold decided (balanced, high-sensitivity, ...); None for a custom threshold,
    # a model without named points, and studies stored before 0007.
    operating_point: Mapped[str | None] = mapped_column(String(64))
    classes: Mapped[list[str]] = mapped_column(JSON)
    seconds: Mapped[float] = mapped_column(Double, default=0.0)

    created_by: Mapped[User | None] = relationship(lazy="joined")
    images: Mapped[list[StudyImage]] = relationship(
        back_populates="study", order_by="StudyImage.position", cascade="all, delete-orphan", passive_deletes=True)


class StudyImage(Base):
    """One file of a study: its result, or the reason it could not be analysed."""

    __tablename__ = "study_images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str | None] = mapped_column(String(16))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    predicted_class: Mapped[str | None] = mapped_column(String(128), index=True)  # the most probable class
    probability: Mapped[float | None] = mapped_column(Double)
    probabilities: Mapped[dict[str, float] | None] = mapped_column(JSON)
    decision: Mapped[list[str] | None] = mapped_column(JSON)  # the findings asserted, in class order
    target_class: Mapped[str | None] = mapped_column(String(128))
    has_features: Mapped[bool] = mapped_column(Boolean, default=False)
    seconds: Mapped[float | None] = mapped_column(Double)
    dicom: Mapped[dict[str, str] | None] = mapped_column(JSON)
    warning: Mapped[str | None] = mapped_column(Text)  # legacy: studies before 0004 flagged scope here
    # False: analysed, but the model could not judge the image (input quality, scope, out of distribution); no finding
    # is asserted and ``reason`` says why. Only meaningful for rows without ``error``.
    assessed: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    reason: Mapped[str | None] = mapped_column(Text)
    # "uncertain - review": near the threshold, or the mirrored image decided otherwise (engine.decision)
    uncertain: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    uncertain_reason: Mapped[str | None] = mapped_column(Text)
    explanation: Mapped[str | None] = mapped_column(String(128))  # what drew the heatmap, e.g. "Layer-CAM at layer2"
    error: Mapped[str | None] = mapped_column(Text)

    study: Mapped[Study] = relationship(back_populates="images")
    findings: Mapped[list[ImageFinding]] = relationship(
        back_populates="image", cascade="all, delete-orphan", passive_deletes=True)


class ImageFinding(Base):
    """One class asserted for an analysed image (the decision at the study's threshold): what "studies with finding
    X" searches, portably on every database (a JSON column cannot be queried the same way on all three)."""

    __tablename__ = "image_findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("study_images.id", ondelete="CASCADE"), index=True)
    class_name: Mapped[str] = mapped_column(String(128), index=True)

    image: Mapped[StudyImage] = relationship(back_populates="findings")


class AuditEvent(Base):
    """Who did what to which study. No foreign key on the study: the trail outlives a deleted study."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    username: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16), index=True)
    study_id: Mapped[int | None] = mapped_column(Integer, index=True)
    detail: Mapped[str | None] = mapped_column(String(255))
    client_address: Mapped[str | None] = mapped_column(String(64))


class AuthSession(Base):
    """One login (a bearer token or a page's cookie): only the token's keyed hash is kept, so logout, a password
    change or an admin's revoke ends it at once, and a copied database holds no usable token."""

    __tablename__ = "auth_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # "api" (bearer) or "cookie" (the page)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LoginThrottle(Base):
    """Failed logins per key (``user:<name>`` or ``addr:<client address>``), in the database so every worker sees
    the same count and lock."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IdempotencyKey(Base):
    """A client's ``Idempotency-Key`` and the study its request created: a retry returns that study. Written in the
    study's own transaction, so a key never names a study that is not there; deleted with the study."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("user_id", "key", name="uq_idempotency_keys_user_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(128))
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
