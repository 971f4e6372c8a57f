"""Server-side sessions: every bearer token and every page login is a row, so ending one takes effect at once."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select, update

from cadx.server.db.orm import AuthSession, User
from cadx.server.db.repository import Repository
from cadx.server.security import TokenCodec

KINDS = ("api", "cookie")


def now() -> datetime:
    """The clock of sessions and throttling (one place for tests to move)."""
    return datetime.now(timezone.utc)


def open_session(repo: Repository, codec: TokenCodec, user: User, kind: str, seconds: int) -> str:
    """A new session for ``user``; returns the token (shown once, stored only as its hash). The caller commits."""
    assert kind in KINDS
    t = now()
    # Rows past their end are of no use; dropping them here keeps the table small without a background job.
    repo.session.execute(delete(AuthSession).where(AuthSession.expires_at < t - timedelta(days=1)))
    token = codec.new()
    repo.session.add(AuthSession(token_hash=codec.digest(token), user_id=user.id, kind=kind, created_at=t,
                                 expires_at=t + timedelta(seconds=seconds)))
    repo.session.flush()
    return token


def find_session(repo: Repository, codec: TokenCodec, token: str, kind: str) -> AuthSession | None:
    """The live session of this token (not revoked, not expired, of this kind), else None."""
    if not token or len(token) > 256:
        return None
    row = repo.session.scalar(select(AuthSession).where(AuthSession.token_hash == codec.digest(token)))
    if row is None or row.kind != kind or row.revoked_at is not None or row.expires_at <= now():
        return None
    return row


def revoke(repo: Repository, row: AuthSession) -> None:
    row.revoked_at = now()
    repo.session.flush()


def revoke_all(repo: Repository, user_id: int) -> int:
    """Ends every live session of the user (password change, admin revoke); returns how many."""
    result = repo.session.execute(update(AuthSession).where(AuthSession.user_id == user_id,
                                                            AuthSession.revoked_at.is_(None))
                                  .values(revoked_at=now()))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
