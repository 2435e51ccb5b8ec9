"""The shop's orders.

Revision ID: shop_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "shop_0001"
down_revision = None
branch_labels = ("shop",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shop_orders",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("customer", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("total", sa.Numeric(14, 2), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("shop_orders")
