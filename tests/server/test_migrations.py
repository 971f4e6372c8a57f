"""Migration 0003 fills image_findings from the studies already stored, and the DDL can be written offline."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

from alembic import command
from sqlalchemy import text

from cadx.server.db.migrate import alembic_config, upgrade_database
from cadx.server.db.session import make_engine


def test_findings_are_filled_from_stored_decisions(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade_database(engine, "0002")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO studies (id, created_at, model_id, model_name, model_version, model_category, "
                          "threshold, classes, seconds) VALUES (1, '2026-11-30 10:00:00', 'm', 'm', 'v', 'Other', "
                          "0.5, '[\"a\", \"b\", \"c\"]', 0)"))
        for image_id, decision, error in [(1, '["a", "c"]', None), (2, '["b"]', None), (3, None, "unreadable"),
                                          (4, '[]', None)]:
            conn.execute(text("INSERT INTO study_images (id, study_id, position, filename, decision, has_features, "
                              "error) VALUES (:i, 1, :i, 'f.png', :d, 0, :e)"), {"i": image_id, "d": decision,
                                                                                 "e": error})
    upgrade_database(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT image_id, class_name FROM image_findings ORDER BY image_id, class_name"))
        assert [tuple(r) for r in rows] == [(1, "a"), (1, "c"), (2, "b")]
    engine.dispose()


def test_offline_sql_is_written_without_reading_rows() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        command.upgrade(alembic_config("postgresql://nobody@localhost/none"), "head", sql=True)
    assert "CREATE TABLE image_findings" in out.getvalue()
