"""API errors as JSON ``{"detail": ..., "errors": [{"filename", "error"}]}`` naming the file and the reason."""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse


class ApiError(HTTPException):
    def __init__(self, status_code: int, detail: str, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(status_code, detail)
        self.errors = errors or []


async def api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse({"detail": exc.detail, "errors": [{"filename": f, "error": e} for f, e in exc.errors]},
                        status_code=exc.status_code)
