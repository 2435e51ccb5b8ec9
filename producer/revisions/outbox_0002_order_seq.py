"""Each order's last seq (outbox_orders), and one outbox row per order and seq.

Revision ID: outbox_0002
Revises: outbox_0001
Created: 2026-12-04

The producer API moves an order from one seq to the next with one conditional write on
outbox_orders; orders already in the outbox are taken in at the highest seq they have.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "outbox_0002"
down_revision = "outbox_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create outbox_orders from the outbox, and the unique index of (order_id, seq)."""
    op.create_table(
        "outbox_orders",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
        if_not_exists=True,
    )
    op.execute(
        "INSERT INTO outbox_orders (order_id, last_seq, updated_at_ms) "
        "SELECT order_id, MAX(seq), MAX(occurred_at_ms) FROM outbox "
        "WHERE order_id NOT IN (SELECT order_id FROM outbox_orders) GROUP BY order_id"
    )
    op.create_index(
        "outbox_order_seq", "outbox", ["order_id", "seq"], unique=True, if_not_exists=True
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_index("outbox_order_seq", "outbox")
    op.drop_table("outbox_orders")
