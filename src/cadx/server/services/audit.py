"""The audit trail as CSV for the privacy officer: streamed in batches from its own session (an export of years
of reads must not sit in memory, and it outlives the request's session)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy.orm import Session, sessionmaker

from cadx.server.db.repository import Repository

COLUMNS = ("id", "at", "username", "action", "study_id", "client_address", "detail")


def audit_csv_rows(session_factory: sessionmaker[Session], date_from: date | None,
                   date_to: date | None) -> Iterator[str]:
    """CSV lines, header first; days are UTC, ``date_to`` inclusive. Cells that a spreadsheet would run as a
    formula (``=``, ``+``, ``-``, ``@`` first) are quoted with a leading apostrophe."""
    since = datetime.combine(date_from, time.min, tzinfo=timezone.utc) if date_from else None
    until = datetime.combine(date_to + timedelta(days=1), time.min, tzinfo=timezone.utc) if date_to else None
    yield _line(COLUMNS)
    with session_factory() as session:
        for e in Repository(session).iter_audit(since, until):
            yield _line((e.id, e.at.isoformat(), e.username, e.action, e.study_id, e.client_address, e.detail))


def _line(values: tuple) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow([_cell(v) for v in values])
    return buf.getvalue()


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
