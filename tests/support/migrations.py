"""Checks on migrated databases: what Alembic's autogenerate still finds between a database
and the models, and a handler whose table changes between two versions of its code."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, MetaData


def drift(conn: Connection, metadata: MetaData) -> list[Any]:
    """What autogenerate would still change to make the database match `metadata`
    (the tables of `metadata` only; Alembic's version table aside)."""
    context = MigrationContext.configure(
        conn,
        opts={
            "include_object": lambda obj, name, kind, reflected, to: (
                kind != "table" or name in metadata.tables
            )
        },
    )
    return list(compare_metadata(context, metadata))


# A team's handler outside the project, in two versions of its code: version 2 adds a column
# to its table and the migration that adds it to a store in place.
NOTIFIER = """
from pathlib import Path

from sqlalchemy import Column, MetaData, String, Table

from events import OrderShippedEvent
from workers.api import Handler


class Notifier(Handler):
    name = "notifier"
    revisions = Path(__file__).with_name("revisions")

    def define_tables(self, metadata: MetaData) -> None:
        Table("sent", metadata, Column("order_id", String(64), primary_key=True),
              Column("carrier", String(200), nullable=False),{extra_column})

    def write(self, tx, events) -> None:
        shipped = [e for e in events if isinstance(e, OrderShippedEvent)]
        tx.executemany({insert}, [{values} for e in shipped])
"""
V1 = {
    "extra_column": "",
    "insert": '"INSERT INTO sent (order_id, carrier) VALUES (?, ?)"',
    "values": "(e.order_id, e.payload.carrier)",
}
V2 = {
    "extra_column": '\n              Column("tracking_number", String(200), nullable=True),',
    "insert": '"INSERT INTO sent (order_id, carrier, tracking_number) VALUES (?, ?, ?)"',
    "values": "(e.order_id, e.payload.carrier, e.payload.tracking_number)",
}
REVISION_1 = '''
"""notifier's table."""

import sqlalchemy as sa
from alembic import op

revision = "notifier_0001"
down_revision = None
branch_labels = ("notifier",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sent",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("carrier", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sent")
'''
REVISION_2 = '''
"""sent.tracking_number: nullable, so the rows already there stay valid."""

import sqlalchemy as sa
from alembic import op

revision = "notifier_0002"
down_revision = "notifier_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sent", sa.Column("tracking_number", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sent") as batch:
        batch.drop_column("tracking_number")
'''


def forget_notifiers() -> None:
    """Drop imported notifier modules: each test imports its versions from a folder of its
    own, under the same module names."""
    for name in [m for m in sys.modules if m.startswith("notifier_")]:
        del sys.modules[name]


def notifier(folder: Path, version: int, module: str = "notifier_handler") -> Path:
    """Write version 1 or 2 of the notifier (module and revisions) into `folder`."""
    revisions = folder / "revisions"
    revisions.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(NOTIFIER.format(**(V1 if version == 1 else V2)))
    (revisions / "notifier_0001_sent.py").write_text(textwrap.dedent(REVISION_1))
    if version == 2:
        (revisions / "notifier_0002_tracking_number.py").write_text(textwrap.dedent(REVISION_2))
    return folder
