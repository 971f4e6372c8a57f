"""Engine and session factory for any SQLAlchemy URL (SQLite gets foreign keys and a busy timeout)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str) -> Engine:
    """One engine per app; the pool pings so a restarted PostgreSQL/MariaDB does not break the next request."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _owner_only_file(Path(parsed.database))
        # Requests run in worker threads; SQLite's same-thread check would refuse the pooled connection.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_recycle=1800)


def _owner_only_file(path: Path) -> None:
    """The SQLite file holds patient ids: created 0600 (its journal and WAL files take the same mode from it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Foreign keys on; a file database in WAL mode, so that readers do not wait for a writer, in this process or in
    the other workers of ``cadx serve --workers N`` (WAL needs the processes on one host: a local disk, not NFS)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    if cursor.execute("PRAGMA database_list").fetchone()[2]:  # a file, not :memory:
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    # Objects stay readable after commit: routers serialise them once the transaction is over.
    return sessionmaker(engine, expire_on_commit=False)
