"""FastAPI dependencies shared by the routers: the app context, a request-scoped repository and the current user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.security import OAuth2PasswordBearer

from cadx.server.context import AppContext
from cadx.server.db.orm import User
from cadx.server.db.repository import Repository
from cadx.server.security import CSRF_HEADER, SAFE_METHODS, csrf_ok
from cadx.server.services.sessions import find_session

# Integers the database must hold (SQLite and BIGINT are 64-bit signed): anything larger is a 422, never an
# OverflowError deep in the driver.
MAX_ID = 2**63 - 1
MAX_POSITION = 2**31 - 1
StudyId = Annotated[int, Path(ge=1, le=MAX_ID, description="A study id")]
UserId = Annotated[int, Path(ge=1, le=MAX_ID, description="A user id")]
Position = Annotated[int, Path(ge=0, le=MAX_POSITION, description="An image's position in its study (0-based)")]
PageNumber = Annotated[int, Query(ge=1, le=MAX_POSITION)]

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


def get_repo(request: Request) -> Iterator[Repository]:
    """One session per request, closed afterwards; writes commit explicitly through the repository."""
    with request.app.state.ctx.session_factory() as session:
        yield Repository(session)


Ctx = Annotated[AppContext, Depends(get_ctx)]
Repo = Annotated[Repository, Depends(get_repo)]


def client_address(request: Request) -> str | None:
    """The client's address (the proxy's X-Forwarded-For when ``forwarded_allow_ips`` trusts it)."""
    return request.client.host if request.client else None


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def current_user(request: Request, token: Annotated[str | None, Depends(oauth2_scheme)],
                 repo: Annotated[Repository, Depends(get_repo)]) -> User:
    """The logged-in user (bearer token first, else session cookie), or 401. The live session row is kept on
    ``request.state.auth_session`` (logout ends it)."""
    codec = request.app.state.ctx.tokens
    if token:
        row = find_session(repo, codec, token, "api")
        if row is None:
            raise _unauthorized("invalid, expired or revoked token")
    else:
        sid = request.session.get("sid")
        row = find_session(repo, codec, sid, "cookie") if isinstance(sid, str) else None
        if row is None:
            raise _unauthorized("not authenticated: log in or send a bearer token")
        if request.method not in SAFE_METHODS and not csrf_ok(request, request.headers.get(CSRF_HEADER)):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"missing or wrong {CSRF_HEADER} header")
    user = repo.user_by_id(row.user_id)
    if user is None or not user.active:
        raise _unauthorized("unknown or disabled user")
    request.state.auth_session = row
    return user


def require_admin(user: Annotated[User, Depends(current_user)]) -> User:
    if user.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin role required")
    return user


def session_user(request: Request, repo: Repository) -> User | None:
    """For pages: the cookie's user or None (pages redirect to the login page instead of a 401)."""
    sid = request.session.get("sid")
    row = find_session(repo, request.app.state.ctx.tokens, sid, "cookie") if isinstance(sid, str) else None
    user = repo.user_by_id(row.user_id) if row is not None else None
    return user if user is not None and user.active else None


CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(require_admin)]
