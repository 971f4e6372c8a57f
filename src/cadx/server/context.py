"""What the routers share for the app's lifetime, built once by ``create_app`` and kept on ``app.state.ctx``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cadx.server.model_store import ModelStore
from cadx.server.settings import Settings
from cadx.server.storage import StudyStorage

if TYPE_CHECKING:
    from fastapi.templating import Jinja2Templates

    from cadx.server.security import TokenCodec


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    store: ModelStore
    storage: StudyStorage
    tokens: TokenCodec
    templates: Jinja2Templates
