"""The producer API: emit an order's events into the outbox, inside your own transaction.

An order service writes its business change and the event that announces it in one local
transaction, on the connection it already holds; the relay (`python -m producer relay`)
publishes the outbox afterwards. See docs/producers.md.

    async with engine.begin() as conn:                      # your transaction
        await conn.execute(orders.update()...)              # your business change
        await emit_async(conn, paid(order_id, amount, PaymentMethod.CARD))

`emit` takes a synchronous connection (SQLAlchemy `Connection` or `Session`, psycopg 3's
`Connection`, `sqlite3.Connection`); `emit_async` an asynchronous one (SQLAlchemy
`AsyncConnection` or `AsyncSession`, psycopg 3's `AsyncConnection`, an asyncpg connection,
`aiosqlite.Connection`). Either:
- checks the event against the contract (the models, and that it encodes to a body every
  reader decodes);
- moves the order to the event's seq with one conditional write on `outbox_orders`: the
  order's next event only, so two transactions for one order can never both write one seq
  (the second waits for the first and then finds the seq taken), and a transaction that
  rolls back leaves nothing behind, no gap for the relay or the downstreams to wait on;
- writes the outbox row, which becomes visible to the relay when your transaction commits.

An event that the order's state does not allow raises `IllegalTransition`; an event_id already
in the outbox raises `DuplicateEvent`. Raised inside your transaction, they roll it back with
your business change. The tables come with the service's migrations: `python -m producer
migrate`, or the `outbox` branch in your own Alembic environment (`REVISIONS`, `metadata`).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from events import (
    EVENT_ADAPTER,
    SEQ_OF,
    AnyEvent,
    IllegalTransition,
    LineItem,
    OrderState,
    PaymentMethod,
)
from events import models as m
from events.evolution import CURRENT_VERSION
from producer.db import REVISIONS, metadata
from producer.outbox import outbox_values

__all__ = [
    "REVISIONS",
    "DuplicateEvent",
    "IllegalTransition",
    "LineItem",
    "PaymentMethod",
    "created",
    "emit",
    "emit_async",
    "metadata",
    "paid",
    "shipped",
]
# The state an order is in once its event of each seq is written.
_STATE_AT = {1: OrderState.CREATED, 2: OrderState.PAID, 3: OrderState.SHIPPED}
_FIRST = (
    "INSERT INTO outbox_orders (order_id, last_seq, updated_at_ms) VALUES (?, 1, ?) "
    "ON CONFLICT (order_id) DO NOTHING"
)
_NEXT = (
    "UPDATE outbox_orders SET last_seq = ?, updated_at_ms = ? WHERE order_id = ? AND last_seq = ?"
)
_STATE = "SELECT last_seq FROM outbox_orders WHERE order_id = ?"
_ROW = (
    "INSERT INTO outbox (event_id, order_id, seq, event_type, occurred_at_ms, body) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING"
)


class DuplicateEvent(ValueError):
    """An event whose event_id is already in the outbox."""


def created(
    order_id: str,
    customer_id: str,
    items: Sequence[LineItem],
    currency: str = "EUR",
) -> m.OrderCreatedEvent:
    """An order.created event (seq 1), its total the sum of its lines."""
    total = sum((i.price * i.qty for i in items), Decimal(0))
    payload = m.OrderCreated(
        customer_id=customer_id, items=list(items), total=total, currency=currency
    )
    return m.OrderCreatedEvent(order_id=order_id, seq=1, payload=payload)


def paid(order_id: str, amount: Decimal, method: PaymentMethod) -> m.OrderPaidEvent:
    """An order.paid event (seq 2)."""
    return m.OrderPaidEvent(
        order_id=order_id, seq=2, payload=m.OrderPaid(amount=amount, method=method)
    )


def shipped(order_id: str, carrier: str, tracking_number: str) -> m.OrderShippedEvent:
    """An order.shipped event (seq 3)."""
    payload = m.OrderShipped(carrier=carrier, tracking_number=tracking_number)
    return m.OrderShippedEvent(order_id=order_id, seq=3, payload=payload)


def _checked(event: AnyEvent) -> dict[str, Any]:
    """The outbox row of an event the contract accepts (else ValueError saying why)."""
    if not isinstance(event, m.OrderCreatedEvent | m.OrderPaidEvent | m.OrderShippedEvent):
        raise TypeError(f"not an order event: {type(event).__name__}")
    if event.schema_version != CURRENT_VERSION:
        raise ValueError(f"producers write schema_version {CURRENT_VERSION}")
    row = outbox_values(event)
    # What readers will decode: a model built around validation fails here, not downstream.
    EVENT_ADAPTER.validate_json(row["body"])
    if event.seq != SEQ_OF[event.event_type]:
        raise ValueError(f"{event.event_type.value} has seq {SEQ_OF[event.event_type]}")
    return row


def _illegal(event: AnyEvent, last_seq: int | None) -> IllegalTransition:
    return IllegalTransition(_STATE_AT.get(last_seq or 0), event.event_type)


def _params(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["event_id"],
        row["order_id"],
        row["seq"],
        row["event_type"],
        row["occurred_at_ms"],
        row["body"],
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def emit(connection: Any, event: AnyEvent) -> None:
    """Write `event` into the outbox in the transaction `connection` is in (a synchronous
    connection: SQLAlchemy `Connection` or `Session`, psycopg 3, `sqlite3`)."""
    row = _checked(event)
    run = _sync_runner(connection)
    if event.seq == 1:
        moved = run(_FIRST, (event.order_id, _now_ms()), False)
    else:
        moved = run(_NEXT, (event.seq, _now_ms(), event.order_id, event.seq - 1), False)
    if moved != 1:
        raise _illegal(event, run(_STATE, (event.order_id,), True))
    if run(_ROW, _params(row), False) != 1:
        raise DuplicateEvent(f"event {row['event_id']} is already in the outbox")


async def emit_async(connection: Any, event: AnyEvent) -> None:
    """Write `event` into the outbox in the transaction `connection` is in (an asynchronous
    connection: SQLAlchemy `AsyncConnection` or `AsyncSession`, psycopg 3, asyncpg,
    aiosqlite)."""
    row = _checked(event)
    run = _async_runner(connection)
    if event.seq == 1:
        moved = await run(_FIRST, (event.order_id, _now_ms()), False)
    else:
        moved = await run(_NEXT, (event.seq, _now_ms(), event.order_id, event.seq - 1), False)
    if moved != 1:
        raise _illegal(event, await run(_STATE, (event.order_id,), True))
    if await run(_ROW, _params(row), False) != 1:
        raise DuplicateEvent(f"event {row['event_id']} is already in the outbox")


# --- the drivers: one statement, its parameters, and whether a value is read back ---------


def _named(sql: str, params: Sequence[Any]) -> tuple[Any, dict[str, Any]]:
    """A `?` statement as SQLAlchemy's text() with named parameters."""
    parts = sql.split("?")
    named = "".join(f"{p}:p{i}" for i, p in enumerate(parts[:-1])) + parts[-1]
    return text(named), {f"p{i}": v for i, v in enumerate(params)}


def _dollar(sql: str) -> str:
    parts = sql.split("?")
    return "".join(f"{p}${i + 1}" for i, p in enumerate(parts[:-1])) + parts[-1]


def _driver(connection: Any) -> str:
    return type(connection).__module__.split(".")[0]


def _sync_runner(connection: Any) -> Any:
    if isinstance(connection, Connection | Session):

        def alchemy(sql: str, params: Sequence[Any], read: bool) -> Any:
            statement, values = _named(sql, params)
            result = connection.execute(statement, values)
            return result.scalar() if read else result.rowcount  # type: ignore[attr-defined]

        return alchemy
    if isinstance(connection, sqlite3.Connection) or _driver(connection) == "psycopg":
        style = "%s" if _driver(connection) == "psycopg" else "?"

        def dbapi(sql: str, params: Sequence[Any], read: bool) -> Any:
            cursor = connection.execute(sql.replace("?", style), params)
            if read:
                found = cursor.fetchone()
                return found[0] if found else None
            return cursor.rowcount

        return dbapi
    raise TypeError(
        f"emit() takes a synchronous connection (SQLAlchemy Connection or Session, psycopg, "
        f"sqlite3), not {type(connection).__name__}; use emit_async for an asynchronous one"
    )


def _async_runner(connection: Any) -> Any:
    if isinstance(connection, AsyncConnection | AsyncSession):

        async def alchemy(sql: str, params: Sequence[Any], read: bool) -> Any:
            statement, values = _named(sql, params)
            result = await connection.execute(statement, values)
            return result.scalar() if read else result.rowcount  # type: ignore[attr-defined]

        return alchemy
    if _driver(connection) == "asyncpg":

        async def asyncpg(sql: str, params: Sequence[Any], read: bool) -> Any:
            if read:
                return await connection.fetchval(_dollar(sql), *params)
            status = await connection.execute(_dollar(sql), *params)
            return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 1", "UPDATE 0"

        return asyncpg
    if _driver(connection) in ("psycopg", "aiosqlite"):
        style = "%s" if _driver(connection) == "psycopg" else "?"

        async def dbapi(sql: str, params: Sequence[Any], read: bool) -> Any:
            cursor = await connection.execute(sql.replace("?", style), params)
            if read:
                found = await cursor.fetchone()
                return found[0] if found else None
            return cursor.rowcount

        return dbapi
    raise TypeError(
        f"emit_async() takes an asynchronous connection (SQLAlchemy AsyncConnection or "
        f"AsyncSession, psycopg, asyncpg, aiosqlite), not {type(connection).__name__}; use "
        "emit for a synchronous one"
    )


def new_order_id() -> str:
    """A fresh order id (any string of letters, digits and `_.:-` up to 64 will do)."""
    return f"ord-{uuid.uuid4().hex[:20]}"
