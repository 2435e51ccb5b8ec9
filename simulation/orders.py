"""The simulated order service's store: orders of its own, each state change written with its
event in one transaction through the producer API, as any team's service would."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events import SEQ_OF, EventType, IllegalTransition, OrderState, transition
from events import models as m
from events.state import source_state
from producer.api import emit_async

metadata = MetaData()
orders = Table(
    "orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("customer_id", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("last_seq", Integer, nullable=False),
    Column("total", Numeric(14, 2), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
)

# Built once: constructing statements per call costs more than executing them on SQLite.
_INSERT_ORDER = insert(orders)
_STATE_OF = select(orders.c.state).where(orders.c.order_id == bindparam("order_id"))
_ADVANCE = (
    update(orders)
    .where(orders.c.order_id == bindparam("oid"), orders.c.state == bindparam("before"))
    .values(state=bindparam("after"), last_seq=bindparam("seq"), updated_at_ms=bindparam("now"))
    .returning(orders.c.total)
)


class UnknownOrder(LookupError):
    """A transition on an order the store does not have."""

    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        super().__init__(f"unknown order {order_id!r}")


class OrderStore:
    """place_order, pay and ship: each one local transaction with its outbox row."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._created = False
        self._creating = asyncio.Lock()

    async def _ready(self) -> None:
        """Its orders table, created on first use (the outbox's come with its migrations)."""
        if self._created:
            return
        async with self._creating:
            if not self._created:
                async with self.engine.begin() as conn:
                    await conn.run_sync(metadata.create_all)
                self._created = True

    async def place_order(
        self,
        customer_id: str,
        items: Sequence[m.LineItem],
        currency: str = "EUR",
        order_id: str | None = None,
    ) -> m.OrderCreatedEvent:
        """Create an order; returns its order.created event."""
        await self._ready()
        total = sum((i.price * i.qty for i in items), Decimal(0))
        event = m.OrderCreatedEvent(
            order_id=order_id or f"ord-{uuid.uuid4().hex[:20]}",
            seq=1,
            payload=m.OrderCreated(
                customer_id=customer_id, items=list(items), total=total, currency=currency
            ),
        )
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    _INSERT_ORDER,
                    {
                        "order_id": event.order_id,
                        "customer_id": customer_id,
                        "state": OrderState.CREATED.value,
                        "last_seq": 1,
                        "total": total,
                        "currency": currency,
                        "updated_at_ms": _now_ms(),
                    },
                )
                await emit_async(conn, event)
        except IntegrityError:
            raise IllegalTransition(OrderState.CREATED, EventType.CREATED) from None
        return event

    async def pay(self, order_id: str, method: m.PaymentMethod) -> m.OrderPaidEvent:
        """Mark an order paid (its total); returns its order.paid event."""
        await self._ready()
        async with self.engine.begin() as conn:
            total = await _advance(conn, order_id, EventType.PAID)
            event = m.OrderPaidEvent(
                order_id=order_id, seq=2, payload=m.OrderPaid(amount=total, method=method)
            )
            await emit_async(conn, event)
        return event

    async def ship(self, order_id: str, carrier: str, tracking_number: str) -> m.OrderShippedEvent:
        """Mark an order shipped; returns its order.shipped event."""
        await self._ready()
        async with self.engine.begin() as conn:
            await _advance(conn, order_id, EventType.SHIPPED)
            shipped = m.OrderShipped(carrier=carrier, tracking_number=tracking_number)
            event = m.OrderShippedEvent(order_id=order_id, seq=3, payload=shipped)
            await emit_async(conn, event)
        return event

    async def state_of(self, order_id: str) -> OrderState | None:
        """The order's current state, or None when unknown."""
        await self._ready()
        async with self.engine.connect() as conn:
            state = await conn.scalar(_STATE_OF, {"order_id": order_id})
        return OrderState(state) if state else None


async def _advance(conn: AsyncConnection, order_id: str, event_type: EventType) -> Decimal:
    """Move the order to the state after event_type; returns its total, or raises."""
    before = source_state(event_type)
    after = transition(before, event_type)
    # A conditional write first: it takes the row (and SQLite's write lock) at once, so
    # two concurrent transitions of one order cannot both pass the state check.
    assert before is not None, "only creation starts from no state"
    params = {
        "oid": order_id,
        "before": before.value,
        "after": after.value,
        "seq": SEQ_OF[event_type],
        "now": _now_ms(),
    }
    total = (await conn.execute(_ADVANCE, params)).scalar_one_or_none()
    if total is not None:
        return Decimal(total)
    state = await conn.scalar(_STATE_OF, {"order_id": order_id})
    if state is None:
        raise UnknownOrder(order_id)
    raise IllegalTransition(OrderState(state), event_type)


def _now_ms() -> int:
    return int(time.time() * 1000)
