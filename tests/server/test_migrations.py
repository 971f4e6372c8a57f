"""Migration 0003 fills image_findings from the studies already stored, 0004 keeps old images assessed, and the DDL
can be written offline."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

from alembic import command
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from cadx.server.db.migrate import alembic_config, upgrade_database
from cadx.server.db.orm import StudyImage
from cadx.server.db.session import make_engine
from cadx.server.schemas import image_result


def insert_study(conn: Connection, classes: str, category: str = "Other") -> None:
    """Study 1, as a server of an older schema would have stored it."""
    conn.execute(text("INSERT INTO studies (id, created_at, model_id, model_name, model_version, model_category, "
                      "threshold, classes, seconds) VALUES (1, '2026-11-30 10:00:00', 'm', 'm', 'v', :category, 0.5, "
                      ":classes, 0)"), {"category": category, "classes": classes})


def test_findings_are_filled_from_stored_decisions(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade_database(engine, "0002")
    with engine.begin() as conn:
        insert_study(conn, '["a", "b", "c"]')
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


def test_images_stored_before_0004_read_as_assessed(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade_database(engine, "0003")
    with engine.begin() as conn:
        insert_study(conn, '["normal", "pneumonia"]', "Chest X-ray")
        conn.execute(text("INSERT INTO study_images (id, study_id, position, filename, predicted_class, decision, "
                          "has_features, warning) VALUES (1, 1, 0, 'old.png', 'pneumonia', '[\"pneumonia\"]', 1, "
                          "'outside the model''s scope: ...')"))
        conn.execute(text("INSERT INTO image_findings (id, image_id, class_name) VALUES (1, 1, 'pneumonia')"))
    upgrade_database(engine)
    with engine.begin() as conn:
        assert [tuple(r) for r in conn.execute(text("SELECT id, assessed, reason, warning FROM study_images"))] == [
            (1, True, None, "outside the model's scope: ...")]  # the old warning is kept, the image stays assessed
        # a row written without the column (as an old server version would) gets the default too
        conn.execute(text("INSERT INTO study_images (id, study_id, position, filename, has_features) "
                          "VALUES (2, 1, 1, 'later.png', 0)"))
        assert conn.execute(text("SELECT assessed FROM study_images WHERE id = 2")).scalar_one() in (True, 1)
    findings = "SELECT image_id, class_name FROM image_findings"
    with engine.connect() as conn:  # the table was altered in place: no copy whose DROP cascades to the findings
        assert [tuple(r) for r in conn.execute(text(findings))] == [(1, "pneumonia")]
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
        assert [tuple(r) for r in conn.execute(text(findings))] == [(1, "pneumonia")]
    upgrade_database(engine)
    with Session(engine) as session:
        image = session.get(StudyImage, 1)
        assert image is not None and image.assessed is True and image.reason is None
        assert image_result(1, image).assessed is True and image_result(1, image).decision == "pneumonia"
    engine.dispose()


def test_offline_sql_is_written_without_reading_rows() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        command.upgrade(alembic_config("postgresql://nobody@localhost/none"), "head", sql=True)
    sql = out.getvalue()
    assert "CREATE TABLE image_findings" in sql
    assert "ADD COLUMN assessed BOOLEAN DEFAULT true NOT NULL" in sql and "ADD COLUMN reason TEXT" in sql
