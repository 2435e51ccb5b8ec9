"""fraud_audit's tables: the audit trail and the flags.

Revision ID: fraud_audit_0001
Revises:
Created: 2026-11-28

Created only where missing: a store made before migrations is adopted as it is.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "fraud_audit_0001"
down_revision = None
branch_labels = ("fraud_audit",)
depends_on = None


def upgrade() -> None:
    """Create audit, flags."""
    op.create_table(
        "audit",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("recorded_at_ms", sa.BigInteger, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "flags",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("rule", sa.String(64), primary_key=True),
        if_not_exists=True,
    )


def downgrade() -> None:
    """Drop audit, flags."""
    op.drop_table("flags")
    op.drop_table("audit")
