"""Logging in, for the API and the page alike: throttled per account and per client address, audited.

The counts live in the database (``login_throttle``), so several workers share them. Failures 1-4 are free; from
the 5th the next attempt waits 1, 2, 4, 8, 16 s (exponential back-off); at ``login_max_failures`` the key is locked
for ``login_lock_minutes``. A key's failures decay once its last failure is that old. A success clears the
account's count, never the address's (else one valid account would reset the limit for spraying others).
"""

from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from cadx.server.db.orm import LoginThrottle, User
from cadx.server.db.repository import Repository
from cadx.server.security import authenticate
from cadx.server.services.sessions import now
from cadx.server.settings import Settings

FREE_FAILURES = 4


class LoginThrottled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins: try again in {retry_after} s")
        self.retry_after = retry_after


def throttle_keys(username: str, address: str | None) -> list[str]:
    return [f"user:{username[:64]}", f"addr:{(address or 'unknown')[:64]}"]


def log_in(repo: Repository, settings: Settings, username: str, password: str, address: str | None) -> User | None:
    """The user, None for a wrong name or password, or LoginThrottled (checked before the password is)."""
    keys = throttle_keys(username, address)
    t = now()
    waits = [row.locked_until for key in keys if (row := repo.session.get(LoginThrottle, key)) is not None
             and row.locked_until is not None and row.locked_until > t]
    if waits:
        repo.audit(None, "login_locked", None, f"user {username[:64]!r} from {address}", address)
        repo.commit()
        raise LoginThrottled(max(1, math.ceil((max(waits) - t).total_seconds())))
    user = authenticate(repo, username, password)
    if user is not None:
        repo.session.execute(delete(LoginThrottle).where(LoginThrottle.key == keys[0]))
        repo.audit(user, "login", None, f"from {address}", address)
        repo.commit()
        return user
    for key in keys:
        _count_failure(repo, settings, key)
    repo.audit(None, "login_failed", None, f"user {username[:64]!r} from {address}", address)
    repo.commit()
    return None


def _count_failure(repo: Repository, settings: Settings, key: str) -> None:
    t = now()
    window = timedelta(minutes=settings.login_lock_minutes)
    row = repo.session.get(LoginThrottle, key, with_for_update=True)
    if row is None:
        try:
            with repo.session.begin_nested():
                row = LoginThrottle(key=key, failures=0, last_failure_at=t)
                repo.session.add(row)
        except IntegrityError:  # another worker inserted it first
            row = repo.session.get(LoginThrottle, key, with_for_update=True, populate_existing=True)
            assert row is not None
    if t - row.last_failure_at > window:
        row.failures = 0
    row.failures += 1
    row.last_failure_at = t
    if row.failures >= settings.login_max_failures:
        row.locked_until = t + window
    elif row.failures > FREE_FAILURES:
        row.locked_until = t + timedelta(seconds=2 ** (row.failures - FREE_FAILURES - 1))
    repo.session.flush()


def unlock(repo: Repository, username: str | None, address: str | None) -> int:
    """Clears the counts and locks of an account and/or an address (admin); returns how many keys were cleared."""
    keys = ([f"user:{username}"] if username else []) + ([f"addr:{address}"] if address else [])
    if not keys:
        return 0
    result = repo.session.execute(delete(LoginThrottle).where(LoginThrottle.key.in_(keys)))
    repo.session.flush()
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
