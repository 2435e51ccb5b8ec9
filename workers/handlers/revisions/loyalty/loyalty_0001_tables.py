"""loyalty's tables: each order's customer, and points per customer.

Revision ID: loyalty_0001
Revises:
Created: 2026-11-28

Created only where missing: a store made before migrations is adopted as it is.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "loyalty_0001"
down_revision = None
branch_labels = ("loyalty",)
depends_on = None


def upgrade() -> None:
    """Create order_customer, points."""
    op.create_table(
        "order_customer",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(200), nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "points",
        sa.Column("customer_id", sa.String(200), primary_key=True),
        sa.Column("points", sa.BigInteger, nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    """Drop order_customer, points."""
    op.drop_table("points")
    op.drop_table("order_customer")
