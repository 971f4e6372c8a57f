"""Liveness and database check; the only API route that needs no login."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy.exc import SQLAlchemyError

from cadx import __version__
from cadx.server.deps import Ctx, Repo
from cadx.server.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut, summary="Server and database status (no login needed)")
def health(ctx: Ctx, repo: Repo, response: Response) -> HealthOut:
    try:
        repo.ping()
        database = "ok"
    except SQLAlchemyError:
        database = "unavailable"
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return HealthOut(status="ok" if database == "ok" else "degraded", version=__version__, database=database,
                     models=len(ctx.store.entries()))
