"""The client's address on every audit event (reads of patient data are audited too), and ``idempotency_keys``: a
client's ``Idempotency-Key`` for the study it created, so a retried upload returns that study instead of a copy.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("client_address", sa.String(64), nullable=True))
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("user_id", "key", name="uq_idempotency_keys_user_key"),
    )
    op.create_index("ix_idempotency_keys_study_id", "idempotency_keys", ["study_id"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_study_id", "idempotency_keys")
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("client_address")
