"""A downstream's store: its effect tables, the inbox and the order progress, one database.

Stores use a synchronous engine. SQLite is embedded and a group commit takes about a
millisecond, far less than handing work to a thread (pysqlite drops the GIL at every
step and a busy event loop holds it for up to the switch interval): it runs inline.
A network database (PostgreSQL) runs on one thread of the store's own.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.sql import Executable

from common.sqlite import sqlite_pragmas

T = TypeVar("T")


def inbox_table(metadata: MetaData) -> Table:
    """inbox(event_id pk, order_id, seq, event_type, applied_at_us): applied events, in order."""
    return Table(
        "inbox",
        metadata,
        Column("event_id", String(36), primary_key=True),
        Column("order_id", String(64), nullable=False, index=True),
        Column("seq", Integer, nullable=False),
        Column("event_type", String(32), nullable=False),
        Column("applied_at_us", BigInteger, nullable=False),
    )


def progress_table(metadata: MetaData) -> Table:
    """order_progress(order_id pk, last_seq, parked_event_id)."""
    return Table(
        "order_progress",
        metadata,
        Column("order_id", String(64), primary_key=True),
        Column("last_seq", Integer, nullable=False),
        Column("parked_event_id", String(36), nullable=True),
    )


@dataclass
class Progress:
    """Where one order is in this downstream."""

    last_seq: int = 0
    parked_event_id: str | None = None


def upsert(conn: Connection, table: Table, index: Sequence[str], update: Sequence[str]) -> Any:
    """An INSERT .. ON CONFLICT DO UPDATE statement for the connection's dialect (built once)."""
    return _upsert(conn.dialect.name, table, tuple(index), tuple(update))


@functools.cache
def _upsert(
    dialect_name: str, table: Table, index: tuple[str, ...], update: tuple[str, ...]
) -> Any:
    # Statements are built once: constructing one costs more than running it on SQLite.
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=list(index), set_={c: stmt.excluded[c] for c in update}
    )


def where_in(table: Table, column: str, *columns: str) -> Any:
    """SELECT columns FROM table WHERE column IN :keys, built once per call site."""
    cols = [table.c[c] for c in (columns or [c.name for c in table.c])]
    return select(*cols).where(table.c[column].in_(bindparam("keys", expanding=True)))


def make_sync_engine(downstream: str, dsn: str | None, store_dir: Path) -> Engine:
    """PostgreSQL (a schema named after the downstream) when dsn says so, else a SQLite file."""
    if dsn and make_url(dsn).get_backend_name() == "postgresql":
        url = make_url(dsn).set(drivername="postgresql+psycopg")
        base = create_engine(url, pool_size=2)
        with base.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{downstream}"'))
        return base.execution_options(schema_translate_map={None: downstream})
    store_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        f"sqlite:///{store_dir / f'{downstream}.db'}", connect_args={"timeout": 30}
    )
    event.listen(engine, "connect", sqlite_pragmas)
    return engine


class DownstreamStore:
    """One downstream's database, used from one thread."""

    def __init__(self, engine: Engine, metadata: MetaData) -> None:
        self.engine = engine
        self.metadata = metadata
        self.inbox = metadata.tables["inbox"]
        self.progress = metadata.tables["order_progress"]
        self._load = where_in(self.progress, "order_id", "order_id", "last_seq", "parked_event_id")
        self._insert_inbox = self.inbox.insert()
        self.inline = engine.dialect.name == "sqlite"
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

    @classmethod
    async def open(
        cls, downstream: str, metadata: MetaData, dsn: str | None, store_dir: Path
    ) -> DownstreamStore:
        """Open (and create) the store."""
        engine = await asyncio.to_thread(make_sync_engine, downstream, dsn, store_dir)
        store = cls(engine, metadata)
        await store.run(metadata.create_all, engine)
        return store

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(*args): inline for SQLite, on the store's thread otherwise."""
        if self.inline:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._thread, partial(fn, *args))

    async def close(self) -> None:
        """Release the connections and the thread."""
        await self.run(self.engine.dispose)
        self._thread.shutdown(wait=True)

    async def load_progress(self, order_ids: Iterable[str]) -> dict[str, Progress]:
        """Progress of each order (orders never seen are absent)."""
        return await self.run(self._load_progress, list(order_ids))

    def _load_progress(self, ids: list[str]) -> dict[str, Progress]:
        with self.engine.connect() as conn:
            rows = conn.execute(self._load, {"keys": ids})
            return {r.order_id: Progress(r.last_seq, r.parked_event_id) for r in rows}

    def record_applied(
        self,
        conn: Connection,
        applied: Sequence[tuple[str, str, int, str]],
        progress: dict[str, Progress],
    ) -> None:
        """Write inbox rows (event_id, order_id, seq, type) in order, and the orders' progress."""
        base = time.time_ns() // 1000
        conn.execute(
            self._insert_inbox,
            [
                {"event_id": e, "order_id": o, "seq": s, "event_type": t, "applied_at_us": base + i}
                for i, (e, o, s, t) in enumerate(applied)
            ],
        )
        conn.execute(
            upsert(conn, self.progress, ["order_id"], ["last_seq", "parked_event_id"]),
            [
                {"order_id": o, "last_seq": p.last_seq, "parked_event_id": p.parked_event_id}
                for o, p in progress.items()
            ],
        )

    async def set_parked(self, order_id: str, progress: Progress) -> None:
        """Persist an order's parked event (or its unparking)."""
        row = {
            "order_id": order_id,
            "last_seq": progress.last_seq,
            "parked_event_id": progress.parked_event_id,
        }

        def write() -> None:
            with self.engine.begin() as conn:
                conn.execute(upsert(conn, self.progress, ["order_id"], ["parked_event_id"]), [row])

        await self.run(write)

    async def query(self, statement: Executable) -> list[Any]:
        """Run a read statement on the store's thread; all rows."""

        def read() -> list[Any]:
            with self.engine.connect() as conn:
                return list(conn.execute(statement).all())

        return await self.run(read)

    async def inbox_rows(self) -> list[Any]:
        """Every inbox row in application order (for operators and tests)."""
        return await self.query(select(self.inbox).order_by(self.inbox.c.applied_at_us))
