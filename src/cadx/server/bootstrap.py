"""Database start-up: migrations, the first admin on an empty database, and adding users (``cadx users add``)."""

from __future__ import annotations

import secrets

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cadx.server.db.orm import User
from cadx.server.db.repository import Repository
from cadx.server.security import hash_password, validate_new_user

FIRST_ADMIN = "admin"


def ensure_first_admin(session_factory: sessionmaker[Session]) -> str | None:
    """On an empty user table, create ``admin`` with a random password and return it (shown once), else None."""
    with session_factory() as session:
        repo = Repository(session)
        if repo.count_users():
            return None
        password = secrets.token_urlsafe(12)
        repo.add_user(FIRST_ADMIN, hash_password(password), "admin")
        try:
            repo.commit()
        except IntegrityError:  # another worker created it first
            return None
        return password


def add_user(session_factory: sessionmaker[Session], username: str, password: str, role: str) -> User:
    validate_new_user(username, role, password)
    with session_factory() as session:
        repo = Repository(session)
        if repo.user_by_name(username) is not None:
            raise ValueError(f"user '{username}' already exists")
        user = repo.add_user(username, hash_password(password), role)
        repo.commit()
        return user
