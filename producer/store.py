"""The order store: every state change writes its event to the outbox in the same transaction."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events import SEQ_OF, AnyEvent, EventType, IllegalTransition, OrderState, transition
from events import models as m
from events.state import source_state
from producer.db import orders, outbox
from producer.outbox import outbox_values

# Built once: constructing statements per call costs more than executing them on SQLite.
_INSERT_ORDER = insert(orders)
_INSERT_OUTBOX = insert(outbox)
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

    async def place_order(
        self,
        customer_id: str,
        items: Sequence[m.LineItem],
        currency: str = "EUR",
        order_id: str | None = None,
    ) -> m.OrderCreatedEvent:
        """Create an order; returns its order.created event."""
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
                await _write_outbox(conn, event)
        except IntegrityError:
            raise IllegalTransition(OrderState.CREATED, EventType.CREATED) from None
        return event

    async def pay(self, order_id: str, method: m.PaymentMethod) -> m.OrderPaidEvent:
        """Mark an order paid (its total); returns its order.paid event."""
        async with self.engine.begin() as conn:
            total = await _advance(conn, order_id, EventType.PAID)
            event = m.OrderPaidEvent(
                order_id=order_id, seq=2, payload=m.OrderPaid(amount=total, method=method)
            )
            await _write_outbox(conn, event)
        return event

    async def ship(self, order_id: str, carrier: str, tracking_number: str) -> m.OrderShippedEvent:
        """Mark an order shipped; returns its order.shipped event."""
        async with self.engine.begin() as conn:
            await _advance(conn, order_id, EventType.SHIPPED)
            shipped = m.OrderShipped(carrier=carrier, tracking_number=tracking_number)
            event = m.OrderShippedEvent(order_id=order_id, seq=3, payload=shipped)
            await _write_outbox(conn, event)
        return event

    async def state_of(self, order_id: str) -> OrderState | None:
        """The order's current state, or None when unknown."""
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


async def _write_outbox(conn: AsyncConnection, event: AnyEvent) -> None:
    await conn.execute(_INSERT_OUTBOX, outbox_values(event))


def _now_ms() -> int:
    return int(time.time() * 1000)
