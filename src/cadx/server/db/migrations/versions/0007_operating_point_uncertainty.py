"""The named operating point that decided a study (None: a custom threshold, or a study from before), and per image
the "uncertain - review" flag with its reason and the explanation method that drew the heatmap.

Every ALTER runs in place (``recreate="never"``), as in 0004: a batch copy of ``study_images`` (for the SQL-expression
default ``sa.false()``) would drop the original and, with foreign keys on, cascade into ``image_findings``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies", recreate="never") as batch:
        batch.add_column(sa.Column("operating_point", sa.String(64), nullable=True))
    with op.batch_alter_table("study_images", recreate="never") as batch:
        batch.add_column(sa.Column("uncertain", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("uncertain_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("explanation", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("study_images", recreate="never") as batch:
        batch.drop_column("explanation")
        batch.drop_column("uncertain_reason")
        batch.drop_column("uncertain")
    with op.batch_alter_table("studies", recreate="never") as batch:
        batch.drop_column("operating_point")
