"""Accounts: argon2 password hashes, opaque session tokens, the session's CSRF token (the request dependencies that
use them, ``CurrentUser`` and ``AdminUser``, are in ``cadx.server.deps``).

A request is authenticated by ``Authorization: Bearer <token>`` (API clients) or by the signed session cookie
(the page). Cookie-authenticated writes must also carry the session's CSRF token in ``X-CSRF-Token``: a cookie is
sent by the browser on cross-site posts, a header set by our own JS is not.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Request

from cadx.server.db.orm import ROLES, User
from cadx.server.db.repository import Repository

_hasher = PasswordHasher()
# Verified against when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def validate_new_user(username: str, role: str, password: str | None = None) -> None:
    """Raises ValueError with a readable reason (shared by the CLI and the first-start bootstrap)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got '{role}'")
    if not (0 < len(username) <= 64 and all(c.isalnum() or c in "._-" for c in username)):
        raise ValueError(f"user name must be 1-64 letters, digits, '.', '_' or '-', got '{username}'")
    if password is not None and len(password) < 8:
        raise ValueError("password must have at least 8 characters")


def authenticate(repo: Repository, username: str, password: str) -> User | None:
    user = repo.user_by_name(username)
    if user is None or not user.active:
        verify_password(_DUMMY_HASH, password)
        return None
    return user if verify_password(user.password_hash, password) else None


class TokenCodec:
    """Opaque random tokens (bearer tokens and the page's session id). Only their keyed hash (HMAC with the secret
    key) is stored, so a copied database yields no usable token and a new secret key ends every session."""

    def __init__(self, secret: str, minutes: int) -> None:
        self._key = secret.encode()
        self.seconds = minutes * 60  # bearer token lifetime

    @staticmethod
    def new() -> str:
        return secrets.token_urlsafe(32)

    def digest(self, token: str) -> str:
        return hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use (the login form needs one before anyone logs in)."""
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_ok(request: Request, supplied: str | None) -> bool:
    expected = request.session.get("csrf")
    return bool(expected and supplied and secrets.compare_digest(expected, supplied))


def start_session(request: Request, session_token: str) -> None:
    """New cookie session on login (no fixation) holding the server-side session's token and a fresh CSRF token."""
    request.session.clear()
    request.session["sid"] = session_token
    request.session["csrf"] = secrets.token_urlsafe(32)
