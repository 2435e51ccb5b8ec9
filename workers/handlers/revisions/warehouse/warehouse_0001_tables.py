"""warehouse's tables: the fact table.

Revision ID: warehouse_0001
Revises:
Created: 2026-11-28

Created only where missing: a store made before migrations is adopted as it is.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "warehouse_0001"
down_revision = None
branch_labels = ("warehouse",)
depends_on = None


def upgrade() -> None:
    """Create facts."""
    op.create_table(
        "facts",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("occurred_at_ms", sa.BigInteger, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("loaded_at_ms", sa.BigInteger, nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    """Drop facts."""
    op.drop_table("facts")
