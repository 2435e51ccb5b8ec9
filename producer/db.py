"""The outbox's tables in the order service's database (SQLite or PostgreSQL), and its engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from common.migrations import migration_lock, upgrade
from common.sqlite import sqlite_pragmas

REVISIONS = Path(__file__).parent / "revisions"

metadata = MetaData()

# One row per event, in commit order of its order's transitions; the relay publishes by id.
outbox = Table(
    "outbox",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("order_id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("occurred_at_ms", BigInteger, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("sent_at_ms", BigInteger, nullable=True),
)
Index(
    "outbox_unsent",
    outbox.c.id,
    sqlite_where=outbox.c.sent_at_ms.is_(None),
    postgresql_where=outbox.c.sent_at_ms.is_(None),
)
# One event of each seq per order: a second writer of a seq fails, whatever its event_id.
Index("outbox_order_seq", outbox.c.order_id, outbox.c.seq, unique=True)

# Where each order is: the seq of its last event written (the producer API moves it with one
# conditional write, so concurrent transactions of one order take turns).
outbox_orders = Table(
    "outbox_orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("last_seq", Integer, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
)


def make_engine(dsn: str) -> AsyncEngine:
    """Create the async engine; SQLite gets WAL, a busy timeout and its folder."""
    url = make_url(dsn)
    kwargs: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    return engine


async def create_schema(engine: AsyncEngine) -> None:
    """Create the tables, or upgrade them in place to the newest migration
    (`producer/revisions`, under Alembic)."""
    async with engine.begin() as conn:
        await conn.run_sync(migrate_outbox)


def migrate_outbox(conn: Connection) -> None:
    """Bring the order service's database to its newest schema, in the caller's transaction."""
    with migration_lock(conn, "outbox"):
        upgrade(conn, [REVISIONS], "outbox")
