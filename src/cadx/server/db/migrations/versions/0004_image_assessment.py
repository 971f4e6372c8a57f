"""Study images get an assessment: ``assessed`` (False when the model could not judge the image: input quality,
scope, out of distribution) and ``reason`` (why not). Rows stored before were all assessed, so the column's server
default is true and they read as assessed.

Both directions ALTER the table in place (``recreate="never"``), also on SQLite: batch mode would otherwise copy
``study_images`` for a column with an SQL-expression default (``sa.true()``) and drop the original, and with
``PRAGMA foreign_keys=ON`` that DROP cascades and empties ``image_findings``. SQLite adds such a column natively;
dropping one needs SQLite 3.35 or later (it fails loudly, never silently, on older ones).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("study_images", recreate="never") as batch:  # never copy: see the docstring
        batch.add_column(sa.Column("assessed", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("study_images", recreate="never") as batch:
        batch.drop_column("reason")
        batch.drop_column("assessed")
