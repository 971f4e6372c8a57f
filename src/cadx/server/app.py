"""``create_app(settings)``: migrate the database, wire context, middleware, routers, pages and static files."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session, sessionmaker
from starlette.middleware.sessions import SessionMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from cadx import __version__
from cadx.server.bootstrap import ensure_first_admin
from cadx.server.context import AppContext
from cadx.server.db.migrate import upgrade_database
from cadx.server.db.repository import Repository
from cadx.server.db.session import make_engine, make_session_factory
from cadx.server.errors import install_error_handlers
from cadx.server.middleware import BodyLimit, SecurityHeaders
from cadx.server.model_store import ModelStore
from cadx.server.routers import auth, catalogue, health, pages, studies
from cadx.server.security import TokenCodec
from cadx.server.settings import Settings
from cadx.server.storage import StudyStorage, private_dir

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
DESCRIPTION = ("Computer-aided diagnosis on medical images. Log in with `POST /api/v1/auth/token` (OAuth2 "
               "password flow) and send `Authorization: Bearer <token>`; the page uses a session cookie. "
               "Results support, and do not replace, a clinician's judgement.")


def create_app(settings: Settings | None = None, *, log_first_admin: bool = True) -> FastAPI:
    """Everything is ready when this returns: schema at head, first admin created on an empty database.

    The first admin's password is on ``app.state.first_admin_password`` (``cadx serve`` prints it once).
    """
    settings = settings or Settings()
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    private_dir(settings.data_dir)  # patient data: owner-only (storage.prepare repeats it for its folders)
    engine = make_engine(settings.database_url)
    upgrade_database(engine)
    session_factory = make_session_factory(engine)
    first_password = ensure_first_admin(session_factory)
    storage = StudyStorage(settings.data_dir)
    storage.prepare(known_studies=lambda ids: _known_studies(session_factory, ids))
    secret = settings.signing_key()
    ctx = AppContext(settings=settings, engine=engine, session_factory=session_factory,
                     store=ModelStore(settings.models_dir, settings.device, settings.backend), storage=storage,
                     tokens=TokenCodec(secret, settings.token_minutes),
                     templates=Jinja2Templates(directory=str(HERE / "templates")))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(title="cadx", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx
    app.state.first_admin_password = first_password
    if first_password and log_first_admin:
        log.warning("first admin: admin / %s (shown once)", first_password)

    app.add_middleware(SessionMiddleware, secret_key=secret, session_cookie="cadx_session",
                       max_age=settings.session_minutes * 60, same_site="lax", https_only=settings.secure_cookies)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(SecurityHeaders, hsts=settings.secure_cookies)
    if settings.forwarded_allow_ips:  # behind a reverse proxy: the client's address (throttling, audit) from it
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    install_error_handlers(app)

    api = APIRouter(prefix="/api/v1")
    for router in (auth.router, catalogue.router, studies.router, health.router):
        api.include_router(router)
    app.include_router(api)
    app.include_router(health.router, include_in_schema=False)
    app.include_router(pages.router)
    app.mount("/static/docs", StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-static")
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    return app


def _known_studies(session_factory: sessionmaker[Session], ids: list[int]) -> set[int]:
    with session_factory() as session:
        return Repository(session).study_ids(ids)


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory cadx.server.app:app_from_env`` (settings from CADX_* variables): each process of
    ``cadx serve --workers N`` is one. Safe side by side: migrating a schema at head and creating a first admin that
    exists change nothing, and the study storage's repair waits for writers (a shared file lock held until commit)."""
    return create_app(Settings())
