"""A downstream's store: its effect tables, the inbox and the order progress, one database.

SQLAlchemy declares the schema and serves operators' queries; the hot path (progress reads,
the group commit of effects, inbox rows and progress) runs on one DB-API connection of its
own, with plain SQL (`workers.tx`). SQLite is embedded and a group commit takes about a
millisecond, far less than handing work to a thread (pysqlite drops the GIL at every step
and a busy event loop holds it for up to the switch interval): it runs inline. A network
database (PostgreSQL) runs on one thread of the store's own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Engine,
    MetaData,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.sql import Executable

from common.sqlite import sqlite_pragmas
from workers.store.migrate import migrate_store
from workers.store.tx import Tx, insert_sql, upsert_sql

T = TypeVar("T")
_INSERT_INBOX = insert_sql("inbox", ["event_id", "order_id", "seq", "event_type", "applied_at_us"])
_UPSERT_PROGRESS = upsert_sql("order_progress", ["order_id"], ["last_seq", "parked_event_id"])
_PARK = upsert_sql(
    "order_progress", ["order_id"], ["last_seq", "parked_event_id"], update=["parked_event_id"]
)
_INSERT_WAITING = (
    insert_sql(
        "waiting",
        [
            "event_id",
            "order_id",
            "seq",
            "shard",
            "body",
            "headers",
            "message_type",
            "content_type",
            "timestamp_us",
            "app_id",
            "since_ms",
            "expires_at_ms",
        ],
    )
    + " ON CONFLICT (event_id) DO NOTHING"
)
_DROP_WAITING = "DELETE FROM waiting WHERE event_id = ?"
_WAITING_COLUMNS = (
    "w.event_id, w.order_id, w.seq, w.shard, w.body, w.headers, w.message_type, "
    "w.content_type, w.timestamp_us, w.app_id, w.since_ms, w.expires_at_ms"
)
# Rows whose wait is over: the predecessor is in (or the row is a duplicate), the order is
# parked, or the deferral bound passed; of the shards named, or stale (any shard).
_DUE_WAITING = (
    f"SELECT {_WAITING_COLUMNS} FROM waiting w "
    "LEFT JOIN order_progress p ON p.order_id = w.order_id "
    "WHERE (w.seq <= COALESCE(p.last_seq, 0) + 1 OR p.parked_event_id IS NOT NULL "
    "OR w.expires_at_ms <= ?) AND (w.shard IN {in} OR w.since_ms <= ?) "
    "ORDER BY w.order_id, w.seq LIMIT ?"
)
_LOAD_PROGRESS = (
    "SELECT order_id, last_seq, parked_event_id FROM order_progress WHERE order_id IN {in}"
)


@dataclass
class Progress:
    """Where one order is in this downstream."""

    last_seq: int = 0
    parked_event_id: str | None = None


@dataclass(frozen=True, slots=True)
class WaitingRow:
    """An event held in the store until its predecessor is applied: the delivery to rebuild."""

    event_id: str
    order_id: str
    seq: int
    shard: str
    body: bytes
    headers: str  # JSON
    message_type: str | None
    content_type: str | None
    timestamp_us: int | None
    app_id: str | None
    since_ms: int
    expires_at_ms: int

    @classmethod
    def of(cls, row: Sequence[Any]) -> WaitingRow:
        """From a row of the waiting table's columns, in their order."""
        (event_id, order_id, seq, shard, body, headers, mtype, ctype, ts, app, since, exp) = row
        return cls(
            event_id, order_id, seq, shard, bytes(body), headers, mtype, ctype, ts, app, since, exp
        )

    def values(self) -> tuple[Any, ...]:
        """The row's values in the table's column order."""
        return (
            self.event_id,
            self.order_id,
            self.seq,
            self.shard,
            self.body,
            self.headers,
            self.message_type,
            self.content_type,
            self.timestamp_us,
            self.app_id,
            self.since_ms,
            self.expires_at_ms,
        )


def sqlite_file(downstream: str, dsn: str | None, store_dir: Path) -> Path | None:
    """The store's SQLite file, or None when dsn names a PostgreSQL database."""
    if dsn and make_url(dsn).get_backend_name() == "postgresql":
        return None
    return store_dir / f"{downstream}.db"


def make_sync_engine(downstream: str, dsn: str | None, store_dir: Path) -> Engine:
    """PostgreSQL (a schema named after the downstream) when dsn says so, else a SQLite file."""
    file = sqlite_file(downstream, dsn, store_dir)
    if file is None:
        assert dsn is not None
        url = make_url(dsn).set(drivername="postgresql+psycopg")
        return create_engine(url, pool_size=2).execution_options(
            schema_translate_map={None: downstream}
        )
    try:
        store_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(
            f"cannot create the SQLite store folder {store_dir.absolute()} ({exc.strerror}); "
            "set WORKERS_STORE_DIR to a writable folder, or WORKERS_DSN to a PostgreSQL database",
        ) from exc
    engine = create_engine(f"sqlite:///{file}", connect_args={"timeout": 30})
    event.listen(engine, "connect", sqlite_pragmas)
    return engine


class DownstreamStore:
    """One downstream's database; its hot path used from one thread at a time."""

    def __init__(self, engine: Engine, metadata: MetaData, schema: str) -> None:
        self.engine = engine
        self.metadata = metadata
        self.inbox = metadata.tables["inbox"]
        self.progress = metadata.tables["order_progress"]
        self.waiting = metadata.tables["waiting"]
        self.dialect = engine.dialect.name
        self.inline = self.dialect == "sqlite"
        dbapi: Any = engine.dialect.dbapi
        self.IntegrityError: type[Exception] = dbapi.IntegrityError
        self.schema = schema
        self._pooled: Any = None
        self._db: Any = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

    def _connect(self) -> None:
        """Take the hot path's own connection (on the thread that will use it)."""
        self._pooled = self.engine.raw_connection()
        self._db = self._pooled.driver_connection
        # Transactions are begun and ended by hand (`transaction`), never implicitly.
        if self.dialect == "sqlite":
            self._db.isolation_level = None
        else:
            self._db.autocommit = True
            self._db.execute(f'SET search_path TO "{self.schema}"')

    @classmethod
    async def open(
        cls,
        downstream: str,
        metadata: MetaData,
        dsn: str | None,
        store_dir: Path,
        revisions: Path | None = None,
    ) -> DownstreamStore:
        """Open the store, created or upgraded to the newest schema (`workers.migrate`);
        `revisions` is the folder of its handler's migrations."""

        def created() -> Engine:
            engine = make_sync_engine(downstream, dsn, store_dir)
            try:
                with engine.begin() as conn:
                    migrate_store(conn, downstream, metadata, revisions)
            except BaseException:
                engine.dispose()
                raise
            return engine

        store = cls(await asyncio.to_thread(created), metadata, downstream)
        await store.run(store._connect)
        return store

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(*args): inline for SQLite, on the store's thread otherwise."""
        if self.inline:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._thread, partial(fn, *args))

    async def close(self) -> None:
        """Release the connections and the thread."""
        if self._pooled is not None:
            await self.run(self._pooled.close)
        await self.run(self.engine.dispose)
        self._thread.shutdown(wait=True)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One transaction on the hot-path connection: committed, or rolled back on error."""
        cursor = self._db.cursor()
        cursor.execute("BEGIN")
        try:
            yield Tx(cursor, self.dialect)
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        else:
            cursor.execute("COMMIT")
        finally:
            cursor.close()

    async def load_progress(self, order_ids: Iterable[str]) -> dict[str, Progress]:
        """Progress of each order (orders never seen are absent)."""
        return await self.run(self._load_progress, list(order_ids))

    def _load_progress(self, ids: list[str]) -> dict[str, Progress]:
        cursor = self._db.cursor()
        try:
            rows = Tx(cursor, self.dialect).select_in(_LOAD_PROGRESS, ids)
        finally:
            cursor.close()
        return {order_id: Progress(seq, parked) for order_id, seq, parked in rows}

    def record_applied(
        self, tx: Tx, applied: Sequence[tuple[str, str, int, str]], progress: dict[str, Progress]
    ) -> None:
        """Write inbox rows (event_id, order_id, seq, type) in order, and the orders' progress."""
        base = time.time_ns() // 1000
        tx.executemany(_INSERT_INBOX, [(*row, base + i) for i, row in enumerate(applied)])
        tx.executemany(
            _UPSERT_PROGRESS, [(o, p.last_seq, p.parked_event_id) for o, p in progress.items()]
        )

    def record_parked(self, tx: Tx, parked: dict[str, Progress]) -> None:
        """Persist orders' parked events (their last applied seq kept as it is)."""
        tx.executemany(_PARK, [(o, p.last_seq, p.parked_event_id) for o, p in parked.items()])

    def record_waiting(self, tx: Tx, rows: Sequence[WaitingRow]) -> None:
        """Hold events for their predecessor (a row already held is kept as it is)."""
        tx.executemany(_INSERT_WAITING, [r.values() for r in rows])

    def drop_waiting(self, tx: Tx, event_ids: Sequence[str]) -> None:
        """Delete held events (applied, moved to a tier or the DLQ, or duplicates)."""
        tx.executemany(_DROP_WAITING, [(e,) for e in event_ids])

    async def due_waiting(
        self, now_ms: int, shards: Sequence[str], stale_before_ms: int, limit: int = 1000
    ) -> list[WaitingRow]:
        """Held events whose wait is over, of these shards or held since before stale_before."""
        return await self.run(self._due_waiting, now_ms, list(shards), stale_before_ms, limit)

    def _due_waiting(
        self, now_ms: int, shards: list[str], stale_before_ms: int, limit: int
    ) -> list[WaitingRow]:
        names = shards or [""]
        sql = _DUE_WAITING.replace("{in}", "(" + ", ".join("?" * len(names)) + ")")
        cursor = self._db.cursor()
        try:
            rows = Tx(cursor, self.dialect).fetchall(sql, [now_ms, *names, stale_before_ms, limit])
        finally:
            cursor.close()
        return [WaitingRow.of(r) for r in rows]

    async def is_waiting(self, event_id: str) -> bool:
        """Whether the store still holds this event for its predecessor."""
        return await self.run(self._is_waiting, event_id)

    def _is_waiting(self, event_id: str) -> bool:
        cursor = self._db.cursor()
        try:
            sql = "SELECT 1 FROM waiting WHERE event_id = ?"
            return bool(Tx(cursor, self.dialect).fetchall(sql, [event_id]))
        finally:
            cursor.close()

    async def count_waiting(self) -> int:
        """How many events the store holds for their predecessor."""
        return await self.run(self._count_waiting)

    def _count_waiting(self) -> int:
        cursor = self._db.cursor()
        try:
            [(count,)] = Tx(cursor, self.dialect).fetchall("SELECT COUNT(*) FROM waiting")
        finally:
            cursor.close()
        return int(count)

    async def waiting_rows(self) -> list[Any]:
        """Every held event, by order and seq (for operators and tests)."""
        w = self.waiting
        return await self.query(select(w).order_by(w.c.order_id, w.c.seq))

    async def query(self, statement: Executable) -> list[Any]:
        """Run a read statement (SQLAlchemy) on the store's thread; all rows."""

        def read() -> list[Any]:
            with self.engine.connect() as conn:
                return list(conn.execute(statement).all())

        return await self.run(read)

    async def inbox_rows(self) -> list[Any]:
        """Every inbox row in application order (for operators and tests)."""
        return await self.query(select(self.inbox).order_by(self.inbox.c.applied_at_us))
