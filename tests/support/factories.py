"""Event factories shared by the tests: one order's events, built as the benchmarks build them."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aio_pika

from broker.received import Received
from events import AnyEvent, LineItem, PaymentMethod
from simulation.planned import PlannedOrder


def order_events(order_id: str, sku: str = "SKU-1", second_sku: str = "SKU-2") -> list[AnyEvent]:
    """created, paid and shipped events of one order, in seq order.

    Two lines: 2 x `sku` at 9.99 and 1 x `second_sku` at 5.00 (24.98 paid, card, DHL).
    """
    items = (
        LineItem(sku=sku, qty=2, price=Decimal("9.99")),
        LineItem(sku=second_sku, qty=1, price=Decimal("5.00")),
    )
    order = PlannedOrder(order_id, f"cust-{order_id}", items, PaymentMethod.CARD, "DHL")
    return order.events()


@dataclass
class Raw:
    """A message as a worker would receive it, built by hand."""

    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    type: str | None = None
    content_type: str | None = "application/json"


def raw_of(message: aio_pika.Message, **changes: Any) -> Raw:
    """The message as a worker receives it, with `changes` to its body or properties."""
    raw = Raw(
        message.body,
        dict(message.headers or {}),
        message.message_id,
        message.type,
        message.content_type,
    )
    for k, v in changes.items():
        setattr(raw, k, v)
    return raw


def received_of(
    message: aio_pika.Message, tag: int = 1, redelivered: bool = False, **headers: Any
) -> Received:
    """An encoded message as the workers' consumer hands it over (delivery tag `tag`), with
    `headers` added."""
    return Received(
        message.body,
        {**(message.headers or {}), **headers},
        message.message_id,
        message.type,
        message.content_type,
        message.timestamp,
        message.app_id,
        tag,
        redelivered,
        message.type,
    )
