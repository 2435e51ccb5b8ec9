"""Event factories shared by the tests."""

from __future__ import annotations

from decimal import Decimal

from events import (
    AnyEvent,
    LineItem,
    OrderCreated,
    OrderCreatedEvent,
    OrderPaid,
    OrderPaidEvent,
    OrderShipped,
    OrderShippedEvent,
    PaymentMethod,
)


def order_events(order_id: str, sku: str = "SKU-1") -> list[AnyEvent]:
    """created, paid and shipped events of one order, in seq order."""
    items = [
        LineItem(sku=sku, qty=2, price=Decimal("9.99")),
        LineItem(sku="SKU-2", qty=1, price=Decimal("5.00")),
    ]
    total = sum((i.price * i.qty for i in items), Decimal(0))
    return [
        OrderCreatedEvent(
            order_id=order_id,
            seq=1,
            payload=OrderCreated(
                customer_id=f"cust-{order_id}", items=items, total=total, currency="EUR"
            ),
        ),
        OrderPaidEvent(
            order_id=order_id, seq=2, payload=OrderPaid(amount=total, method=PaymentMethod.CARD)
        ),
        OrderShippedEvent(
            order_id=order_id, seq=3, payload=OrderShipped(carrier="DHL", tracking=f"T-{order_id}")
        ),
    ]
