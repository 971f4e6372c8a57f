"""FastAPI dependencies shared by the routers: the app context and a request-scoped repository."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request

from cadx.server.context import AppContext
from cadx.server.db.repository import Repository


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


def get_repo(request: Request) -> Iterator[Repository]:
    """One session per request, closed afterwards; writes commit explicitly through the repository."""
    with request.app.state.ctx.session_factory() as session:
        yield Repository(session)


Ctx = Annotated[AppContext, Depends(get_ctx)]
Repo = Annotated[Repository, Depends(get_repo)]
