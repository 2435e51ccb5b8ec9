"""Events waiting for their predecessor wait in the store, not in a retry queue.

Revision ID: bus_0002
Revises: bus_0001
Created: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "bus_0002"
down_revision = "bus_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create waiting: one row per event held until its predecessor is applied."""
    op.create_table(
        "waiting",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("shard", sa.String(255), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("message_type", sa.String(64), nullable=True),
        sa.Column("content_type", sa.String(64), nullable=True),
        sa.Column("timestamp_us", sa.BigInteger, nullable=True),
        sa.Column("app_id", sa.String(200), nullable=True),
        sa.Column("since_ms", sa.BigInteger, nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger, nullable=False),
        if_not_exists=True,
    )
    op.create_index("ix_waiting_order_id", "waiting", ["order_id"], if_not_exists=True)


def downgrade() -> None:
    """Drop waiting (events held in it are lost: drain it first)."""
    op.drop_index("ix_waiting_order_id", "waiting")
    op.drop_table("waiting")
