"""Event factories shared by the tests: one order's events, built as the benchmarks build them."""

from __future__ import annotations

from decimal import Decimal

from events import AnyEvent, LineItem, PaymentMethod
from producer.planned import PlannedOrder


def order_events(order_id: str, sku: str = "SKU-1") -> list[AnyEvent]:
    """created, paid and shipped events of one order, in seq order.

    Two lines: 2 x `sku` at 9.99 and 1 x SKU-2 at 5.00 (24.98 paid, card, DHL).
    """
    items = (
        LineItem(sku=sku, qty=2, price=Decimal("9.99")),
        LineItem(sku="SKU-2", qty=1, price=Decimal("5.00")),
    )
    order = PlannedOrder(order_id, f"cust-{order_id}", items, PaymentMethod.CARD, "DHL")
    return order.events()
