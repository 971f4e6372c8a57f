"""Server-rendered pages (login, recognise, history, one study) and the login-protected API docs.

Pages redirect to the login page instead of answering 401; the JSON they show comes from the REST API.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request, status
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from cadx import __version__
from cadx.server.db.orm import User
from cadx.server.deps import Ctx, CurrentUser, Repo, StudyId, client_address, session_user
from cadx.server.security import csrf_ok, csrf_token, start_session
from cadx.server.services.auth import LoginThrottled, log_in
from cadx.server.services.sessions import find_session, open_session, revoke

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    """Only same-site paths: an attacker's ``next=//evil.example`` must not turn login into a redirector."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=status.HTTP_303_SEE_OTHER)


def _page(request: Request, ctx: Ctx, name: str, user: User | None, status_code: int = 200,
          **extra: Any) -> HTMLResponse:
    context = {"user": user, "csrf_token": csrf_token(request), "version": __version__,
               "max_upload_mb": ctx.settings.max_upload_mb, **extra}
    return ctx.templates.TemplateResponse(request, name, context, status_code=status_code)


@router.get("/login")
def login_page(request: Request, ctx: Ctx, repo: Repo, next: str = "/") -> Response:
    if session_user(request, repo) is not None:
        return RedirectResponse(_safe_next(next), status_code=status.HTTP_303_SEE_OTHER)
    return _page(request, ctx, "login.html", None, next=_safe_next(next), error=None)


@router.post("/login")
def login(request: Request, ctx: Ctx, repo: Repo, username: Annotated[str, Form()],
          password: Annotated[str, Form()], csrf: Annotated[str, Form(alias="csrf_token")] = "",
          next: Annotated[str, Form()] = "/") -> Response:
    target = _safe_next(next)
    if not csrf_ok(request, csrf):
        return _page(request, ctx, "login.html", None, 403, next=target, username=username,
                     error="The form expired. Please log in again.")
    try:
        user = log_in(repo, ctx.settings, username, password, client_address(request))
    except LoginThrottled as exc:
        page = _page(request, ctx, "login.html", None, 429, next=target, username=username,
                     error=f"Too many failed log-ins. Please try again in {exc.retry_after} seconds.")
        page.headers["Retry-After"] = str(exc.retry_after)
        return page
    if user is None:
        return _page(request, ctx, "login.html", None, 401, next=target, username=username,
                     error="Wrong user name or password.")
    start_session(request, open_session(repo, ctx.tokens, user, "cookie", ctx.settings.session_minutes * 60))
    repo.commit()
    return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)


@router.post("/logout")
def logout(request: Request, ctx: Ctx, repo: Repo, csrf: Annotated[str, Form(alias="csrf_token")] = "") -> Response:
    if csrf_ok(request, csrf):
        sid = request.session.get("sid")
        row = find_session(repo, ctx.tokens, sid, "cookie") if isinstance(sid, str) else None
        if row is not None:  # ends it on the server: a copy of the cookie is worthless from now on
            revoke(repo, row)
            repo.audit(repo.user_by_id(row.user_id), "logout", None, "page", client_address(request))
            repo.commit()
        request.session.clear()
    return RedirectResponse("/login", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/")
def recognise_page(request: Request, ctx: Ctx, repo: Repo) -> Response:
    user = session_user(request, repo)
    return _page(request, ctx, "index.html", user, page="recognise") if user else _to_login(request)


@router.get("/history")
def history_page(request: Request, ctx: Ctx, repo: Repo) -> Response:
    user = session_user(request, repo)
    return _page(request, ctx, "history.html", user, page="history") if user else _to_login(request)


@router.get("/studies/{study_id}")
def study_page(study_id: StudyId, request: Request, ctx: Ctx, repo: Repo) -> Response:
    user = session_user(request, repo)
    return _page(request, ctx, "study.html", user, page="history", study_id=study_id) if user else _to_login(request)


@router.get("/openapi.json")
def openapi_schema(request: Request, _user: CurrentUser) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def api_docs(request: Request, repo: Repo) -> Response:
    if session_user(request, repo) is None:
        return _to_login(request)
    return get_swagger_ui_html(openapi_url="/openapi.json", title="cadx API",
                               swagger_js_url="/static/docs/swagger-ui-bundle.js",
                               swagger_css_url="/static/docs/swagger-ui.css",
                               swagger_favicon_url="/static/favicon.svg")
