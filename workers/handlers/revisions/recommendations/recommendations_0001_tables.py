"""recommendations's tables: co-purchase counts per pair of SKUs.

Revision ID: recommendations_0001
Revises:
Created: 2026-11-28

Created only where missing: a store made before migrations is adopted as it is.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "recommendations_0001"
down_revision = None
branch_labels = ("recommendations",)
depends_on = None


def upgrade() -> None:
    """Create copurchase."""
    op.create_table(
        "copurchase",
        sa.Column("sku_a", sa.String(200), primary_key=True),
        sa.Column("sku_b", sa.String(200), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    """Drop copurchase."""
    op.drop_table("copurchase")
