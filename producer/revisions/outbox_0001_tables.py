"""The outbox table.

Revision ID: outbox_0001
Revises:
Created: 2026-11-28

Created only where missing: a database made before migrations is adopted as it is.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "outbox_0001"
down_revision = None
branch_labels = ("outbox",)
depends_on = None


def upgrade() -> None:
    """Create the outbox and the index of unsent outbox rows."""
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("occurred_at_ms", sa.BigInteger, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("sent_at_ms", sa.BigInteger, nullable=True),
        if_not_exists=True,
    )
    unsent = sa.text("sent_at_ms IS NULL")
    op.create_index(
        "outbox_unsent",
        "outbox",
        ["id"],
        sqlite_where=unsent,
        postgresql_where=unsent,
        if_not_exists=True,
    )


def downgrade() -> None:
    """Drop the outbox."""
    op.drop_index("outbox_unsent", "outbox")
    op.drop_table("outbox")
