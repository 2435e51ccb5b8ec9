"""The bus's tables in every downstream store: inbox, order progress and shard leases.

Revision ID: bus_0001
Revises:
Created: 2026-11-28

Created only where missing: a store made before migrations is adopted as it is.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "bus_0001"
down_revision = None
branch_labels = ("bus",)
depends_on = None


def upgrade() -> None:
    """Create the inbox, order_progress, shard_members, shard_leases and shard_lease_log."""
    op.create_table(
        "inbox",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("applied_at_us", sa.BigInteger, nullable=False),
        if_not_exists=True,
    )
    op.create_index("ix_inbox_order_id", "inbox", ["order_id"], if_not_exists=True)
    op.create_table(
        "order_progress",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("parked_event_id", sa.String(36), nullable=True),
        if_not_exists=True,
    )
    op.create_table(
        "shard_members",
        sa.Column("member", sa.String(200), primary_key=True),
        sa.Column("joined_at_ms", sa.BigInteger, nullable=False),
        sa.Column("seen_at_ms", sa.BigInteger, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "shard_leases",
        sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger, nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "shard_lease_log",
        sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("epoch", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("acquired_at_ms", sa.BigInteger, nullable=False),
        sa.Column("released_at_ms", sa.BigInteger, nullable=True),
        if_not_exists=True,
    )


def downgrade() -> None:
    """Drop the bus's tables."""
    for table in ("shard_lease_log", "shard_leases", "shard_members", "order_progress"):
        op.drop_table(table)
    op.drop_index("ix_inbox_order_id", "inbox")
    op.drop_table("inbox")
