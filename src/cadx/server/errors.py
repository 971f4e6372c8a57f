"""One JSON error shape for every error the server sends: ``{"detail": "...", "errors": [{"filename", "error"}]}``
(``errors`` names refused files; it is empty otherwise). Validation errors say which field and why, never echo the
input; an unexpected exception is a plain 500 without any of its text (it goes to the log)."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(HTTPException):
    def __init__(self, status_code: int, detail: str, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(status_code, detail)
        self.errors = errors or []


def error_body(detail: str, errors: list[tuple[str, str]] | None = None) -> dict:
    return {"detail": detail, "errors": [{"filename": f, "error": e} for f, e in errors or []]}


async def api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(error_body(str(exc.detail), exc.errors), status_code=exc.status_code)


async def http_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


async def validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    reasons = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err.get("loc", ()))
        reasons.append(f"{where}: {err.get('msg', 'invalid')}"[:300])
    return JSONResponse(error_body("invalid request: " + "; ".join(reasons[:10])), status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
