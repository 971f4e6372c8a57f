"""FastAPI dependencies shared by the routers: the app context, a request-scoped repository and the current user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer

from cadx.server.context import AppContext
from cadx.server.db.orm import User
from cadx.server.db.repository import Repository
from cadx.server.security import CSRF_HEADER, SAFE_METHODS, csrf_ok

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


def get_repo(request: Request) -> Iterator[Repository]:
    """One session per request, closed afterwards; writes commit explicitly through the repository."""
    with request.app.state.ctx.session_factory() as session:
        yield Repository(session)


Ctx = Annotated[AppContext, Depends(get_ctx)]
Repo = Annotated[Repository, Depends(get_repo)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def current_user(request: Request, token: Annotated[str | None, Depends(oauth2_scheme)],
                 repo: Annotated[Repository, Depends(get_repo)]) -> User:
    """The logged-in user (bearer token first, else session cookie), or 401."""
    if token:
        uid = request.app.state.ctx.tokens.read(token)
        if uid is None:
            raise _unauthorized("invalid or expired token")
    else:
        uid = request.session.get("uid")
        if uid is None:
            raise _unauthorized("not authenticated: log in or send a bearer token")
        if request.method not in SAFE_METHODS and not csrf_ok(request, request.headers.get(CSRF_HEADER)):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"missing or wrong {CSRF_HEADER} header")
    user = repo.user_by_id(uid)
    if user is None or not user.active:
        raise _unauthorized("unknown or disabled user")
    return user


def require_admin(user: Annotated[User, Depends(current_user)]) -> User:
    if user.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin role required")
    return user


def session_user(request: Request, repo: Repository) -> User | None:
    """For pages: the cookie's user or None (pages redirect to the login page instead of a 401)."""
    uid = request.session.get("uid")
    user = repo.user_by_id(uid) if isinstance(uid, int) else None
    return user if user is not None and user.active else None


CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(require_admin)]
