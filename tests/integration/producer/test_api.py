"""The producer API on every connection a service may hold, on SQLite and PostgreSQL: events
written in the caller's transaction (committed with it, or gone with its rollback), illegal
transitions refused in words, and concurrent writers of one order never sharing a seq."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiosqlite
import asyncpg
import psycopg
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from events import EVENT_ADAPTER, EventType, IllegalTransition
from producer.api import DuplicateEvent, created, emit, emit_async, paid, shipped
from producer.db import create_schema, make_engine, outbox
from tests.support.factories import order_events
from tests.support.producer import postgres_database

Tx = Callable[[], AbstractAsyncContextManager[Any]]  # a transaction: the connection inside


@asynccontextmanager
async def database(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A database with the outbox migrated: its SQLAlchemy async DSN."""
    if backend == "sqlite":
        dsn = f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}"
    else:
        async with postgres_database() as pg:
            engine = make_engine(pg)
            await create_schema(engine)
            await engine.dispose()
            yield pg
            return
    engine = make_engine(dsn)
    await create_schema(engine)
    await engine.dispose()
    yield dsn


def _plain(dsn: str) -> str:
    """The DSN as a driver's own connect() takes it."""
    url = make_url(dsn)
    if url.get_backend_name() == "sqlite":
        return str(url.database)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


# Each way a service may hold its transaction: (name, backend, factory of `transaction()`).
async def _transactions(name: str, dsn: str) -> tuple[Tx, Callable[[], Awaitable[None]]]:
    plain = _plain(dsn)
    if name == "sqlalchemy-async":
        engine = create_async_engine(dsn)

        @asynccontextmanager
        async def tx() -> AsyncIterator[AsyncConnection]:
            async with engine.begin() as conn:
                yield conn

        return tx, engine.dispose
    if name == "sqlalchemy-async-session":
        engine = create_async_engine(dsn)

        @asynccontextmanager
        async def tx() -> AsyncIterator[AsyncSession]:
            async with AsyncSession(engine) as session, session.begin():
                yield session

        return tx, engine.dispose
    if name in ("sqlalchemy-sync", "sqlalchemy-sync-session"):
        url = make_url(dsn)
        driver = "sqlite" if url.get_backend_name() == "sqlite" else "postgresql+psycopg"
        engine_sync = create_engine(url.set(drivername=driver))

        @asynccontextmanager
        async def tx() -> AsyncIterator[Any]:
            if name == "sqlalchemy-sync":
                with engine_sync.begin() as conn:
                    yield conn
            else:
                with Session(engine_sync) as session, session.begin():
                    yield session

        async def close() -> None:
            engine_sync.dispose()

        return tx, close
    if name == "sqlite3":

        @asynccontextmanager
        async def tx() -> AsyncIterator[sqlite3.Connection]:
            conn = sqlite3.connect(plain, timeout=30)
            try:
                with conn:  # commits, or rolls back on an exception
                    yield conn
            finally:
                conn.close()

        return tx, _nothing
    if name == "aiosqlite":

        @asynccontextmanager
        async def tx() -> AsyncIterator[aiosqlite.Connection]:
            async with aiosqlite.connect(plain, timeout=30) as conn:
                try:
                    yield conn
                except BaseException:
                    await conn.rollback()
                    raise
                await conn.commit()

        return tx, _nothing
    if name in ("psycopg", "psycopg-async"):

        @asynccontextmanager
        async def tx() -> AsyncIterator[Any]:
            if name == "psycopg":
                with psycopg.connect(plain) as conn, conn.transaction():
                    yield conn
            else:
                conn_async = await psycopg.AsyncConnection.connect(plain)
                async with conn_async, conn_async.transaction():
                    yield conn_async

        return tx, _nothing
    assert name == "asyncpg"

    @asynccontextmanager
    async def tx() -> AsyncIterator[asyncpg.Connection]:
        conn = await asyncpg.connect(plain)
        try:
            async with conn.transaction():
                yield conn
        finally:
            await conn.close()

    return tx, _nothing


async def _nothing() -> None:
    return None


SYNC = {"sqlalchemy-sync", "sqlalchemy-sync-session", "sqlite3", "psycopg"}
CASES = [
    *(("sqlite", n) for n in ("sqlalchemy-async", "sqlalchemy-async-session", "sqlalchemy-sync")),
    *(("sqlite", n) for n in ("sqlalchemy-sync-session", "sqlite3", "aiosqlite")),
    *(("postgresql", n) for n in ("sqlalchemy-async", "sqlalchemy-async-session")),
    *(("postgresql", n) for n in ("sqlalchemy-sync", "sqlalchemy-sync-session")),
    *(("postgresql", n) for n in ("psycopg", "psycopg-async", "asyncpg")),
]


async def _emit(name: str, conn: Any, event: Any) -> None:
    if name in SYNC:
        emit(conn, event)
    else:
        await emit_async(conn, event)


async def _outbox(dsn: str) -> list[tuple[str, int, str]]:
    engine = make_engine(dsn)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(outbox.c.order_id, outbox.c.seq, outbox.c.body).order_by(outbox.c.id)
            )
            return [(o, s, b) for o, s, b in rows]
    finally:
        await engine.dispose()


@pytest.mark.parametrize(("backend", "name"), CASES, ids=[f"{b}-{n}" for b, n in CASES])
async def test_events_commit_with_the_callers_transaction_and_vanish_with_its_rollback(
    backend: str, name: str, tmp_path: Path
) -> None:
    async with database(backend, tmp_path) as dsn:
        tx, close = await _transactions(name, dsn)
        try:
            events = order_events("o-1")
            for event in events:
                async with tx() as conn:
                    await _emit(name, conn, event)
            # A business change that fails after its event was written: nothing is left.
            with pytest.raises(RuntimeError, match="the warehouse said no"):
                async with tx() as conn:
                    await _emit(name, conn, order_events("o-2")[0])
                    raise RuntimeError("the warehouse said no")
            # An event the order's state does not allow is refused in words.
            refused = r"order\.paid is not allowed on an order in state 'shipped'"
            with pytest.raises(IllegalTransition, match=refused):
                async with tx() as conn:
                    await _emit(name, conn, order_events("o-1")[1])
            with pytest.raises(IllegalTransition, match="on a new order"):
                async with tx() as conn:
                    await _emit(name, conn, order_events("o-3")[2])
        finally:
            await close()
        rows = await _outbox(dsn)
    assert [(o, s) for o, s, _ in rows] == [("o-1", 1), ("o-1", 2), ("o-1", 3)]
    assert [EVENT_ADAPTER.validate_json(body) for _, _, body in rows] == events


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_twenty_concurrent_writers_of_one_order_never_share_or_skip_a_seq(
    backend: str, tmp_path: Path
) -> None:
    async with database(backend, tmp_path) as dsn:
        tx, close = await _transactions("sqlalchemy-async", dsn)
        outcomes: list[str] = []

        async def writer(n: int) -> None:
            # Each writer tries to take the order as far as it can; each step is a
            # transaction of its own, which also holds a while (a slow business change).
            for event in order_events("o-race"):
                try:
                    async with tx() as conn:
                        await emit_async(conn, event.model_copy(update={"event_id": uuid4()}))
                        await asyncio.sleep(0.01 * (n % 3))
                    outcomes.append(f"{event.seq} by {n}")
                except IllegalTransition:
                    continue

        try:
            await asyncio.gather(*(writer(n) for n in range(20)))
        finally:
            await close()
        rows = await _outbox(dsn)
    assert sorted(s for _, s, _ in rows) == [1, 2, 3], rows
    assert len(outcomes) == 3, f"writers that succeeded: {outcomes}"


async def test_an_event_id_already_in_the_outbox_is_refused(tmp_path: Path) -> None:
    async with database("sqlite", tmp_path) as dsn:
        tx, close = await _transactions("sqlalchemy-async", dsn)
        created_ = order_events("o-1")[0]
        try:
            async with tx() as conn:
                await emit_async(conn, created_)
            again = created_.model_copy(update={"order_id": "o-2"})
            with pytest.raises(DuplicateEvent):
                async with tx() as conn:
                    await emit_async(conn, again)
        finally:
            await close()
        assert [(o, s) for o, s, _ in await _outbox(dsn)] == [("o-1", 1)]


async def test_the_builders_fill_seq_and_the_contract_is_checked() -> None:
    from decimal import Decimal

    from events import LineItem, PaymentMethod

    event = created("o-9", "c-1", [LineItem(sku="SKU-1", qty=2, price=Decimal("1.50"))])
    assert (event.seq, event.payload.total) == (1, Decimal("3.00"))
    assert paid("o-9", Decimal("3.00"), PaymentMethod.CARD).seq == 2
    assert shipped("o-9", "DHL", "T1").event_type is EventType.SHIPPED
    forged = event.model_copy(update={"seq": 3})
    with pytest.raises(ValueError, match="seq"):
        emit(sqlite3.connect(":memory:"), forged)
    with pytest.raises(TypeError, match="emit_async"):
        emit(object(), event)
