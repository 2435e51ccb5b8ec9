"""Planned orders: an order's content fixed by a seed, and the three events of its life.

The simulator drives planned orders through the order store; the benchmarks and the tests
build the same events from them directly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

from events import AnyEvent, LineItem, PaymentMethod
from events import models as m
from simulation.skus import flaky_sku, poison_sku

CATALOG = [f"SKU-{i:03d}" for i in range(1, 201)]
CARRIERS = ["DHL", "UPS", "FedEx", "PostNL", "GLS"]
CURRENCY = "EUR"


@dataclass(frozen=True)
class PlannedOrder:
    """One order's content."""

    order_id: str
    customer_id: str
    items: tuple[LineItem, ...]
    method: PaymentMethod
    carrier: str
    flaky: bool = False
    poison: bool = False

    @property
    def total(self) -> Decimal:
        """The sum of its lines."""
        return sum((i.price * i.qty for i in self.items), Decimal(0))

    @property
    def tracking_number(self) -> str:
        """Its parcel's tracking code."""
        return f"TRK{self.order_id[-7:]}"

    def events(self) -> list[AnyEvent]:
        """created, paid and shipped, in seq order."""
        created = m.OrderCreated(
            customer_id=self.customer_id,
            items=list(self.items),
            total=self.total,
            currency=CURRENCY,
        )
        paid = m.OrderPaid(amount=self.total, method=self.method)
        shipped = m.OrderShipped(carrier=self.carrier, tracking_number=self.tracking_number)
        return [
            m.OrderCreatedEvent(order_id=self.order_id, seq=1, payload=created),
            m.OrderPaidEvent(order_id=self.order_id, seq=2, payload=paid),
            m.OrderShippedEvent(order_id=self.order_id, seq=3, payload=shipped),
        ]


def plan_order(seed: int, index: int, flaky_rate: float, poison_rate: float) -> PlannedOrder:
    """The index-th order of a run with this seed (reproducible)."""
    rng = random.Random(f"{seed}:{index}")
    skus = rng.sample(CATALOG, rng.randint(1, 4))
    poison = rng.random() < poison_rate
    flaky = not poison and rng.random() < flaky_rate
    if poison:
        skus[0] = poison_sku(skus[0])
    elif flaky:
        skus[0] = flaky_sku(skus[0], rng.randint(1, 3))
    items = tuple(
        LineItem(sku=s, qty=rng.randint(1, 3), price=Decimal(rng.randint(199, 19999)) / 100)
        for s in skus
    )
    return PlannedOrder(
        order_id=f"sim-{seed}-{index:07d}",
        customer_id=f"cust-{rng.randint(1, max(10, index // 3 + 10)):06d}",
        items=items,
        method=rng.choice(list(PaymentMethod)),
        carrier=rng.choice(CARRIERS),
        flaky=flaky,
        poison=poison,
    )
