"""Image findings: one row per class a decision asserted, so the history filter matches what the table shows
(before, it matched the most probable class, which differs from a binary decision at a validation threshold).

Existing studies are filled in from each analysed image's stored decision.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""
from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    findings = op.create_table(
        "image_findings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("study_images.id", ondelete="CASCADE"), nullable=False),
        sa.Column("class_name", sa.String(128), nullable=False),
    )
    op.create_index("ix_image_findings_image_id", "image_findings", ["image_id"])
    op.create_index("ix_image_findings_class_name", "image_findings", ["class_name"])
    if op.get_context().as_sql:  # `alembic upgrade --sql` writes DDL only: there are no rows to read
        return
    images = sa.table("study_images", sa.column("id", sa.Integer()), sa.column("decision", sa.JSON()),
                      sa.column("error", sa.Text()))
    bind = op.get_bind()
    rows = []
    for image_id, decision in bind.execute(sa.select(images.c.id, images.c.decision).where(images.c.error.is_(None))):
        if isinstance(decision, str):  # drivers that hand JSON back as text
            decision = json.loads(decision)
        rows += [{"image_id": image_id, "class_name": str(c)} for c in decision or []]
    if rows:
        op.bulk_insert(findings, rows)


def downgrade() -> None:
    op.drop_table("image_findings")
