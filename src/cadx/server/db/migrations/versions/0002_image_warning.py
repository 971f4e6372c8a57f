"""Study images get a warning: analysed, but the result may not apply (e.g. a DICOM outside the model's scope).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("study_images") as batch:  # batch mode: SQLite cannot ALTER every column kind
        batch.add_column(sa.Column("warning", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("study_images") as batch:
        batch.drop_column("warning")
