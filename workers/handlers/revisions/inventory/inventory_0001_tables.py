"""inventory's tables: stock per SKU.

Revision ID: inventory_0001
Revises:
Created: 2026-11-28

Created only where missing: a store made before migrations is adopted as it is.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "inventory_0001"
down_revision = None
branch_labels = ("inventory",)
depends_on = None


def upgrade() -> None:
    """Create stock."""
    op.create_table(
        "stock",
        sa.Column("sku", sa.String(200), primary_key=True),
        sa.Column("on_hand", sa.Integer, nullable=False),
        sa.Column("reserved", sa.Integer, nullable=False),
        sa.Column("backordered", sa.Integer, nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    """Drop stock."""
    op.drop_table("stock")
