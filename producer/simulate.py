"""Simulated order traffic: orders through created -> paid -> shipped, via the outbox."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from events import IllegalTransition, LineItem, PaymentMethod
from events.simulation import flaky_sku, poison_sku
from producer.store import OrderStore

CATALOG = [f"SKU-{i:03d}" for i in range(1, 201)]
CARRIERS = ["DHL", "UPS", "FedEx", "PostNL", "GLS"]


@dataclass(frozen=True)
class PlannedOrder:
    """One simulated order's content, fixed by the seed."""

    order_id: str
    customer_id: str
    items: tuple[LineItem, ...]
    method: PaymentMethod
    carrier: str
    flaky: bool
    poison: bool


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


@dataclass
class TrafficStats:
    """What the simulated order service did."""

    orders: int = 0
    events: int = 0
    shipped: int = 0
    flaky_orders: int = 0
    poison_orders: int = 0


class DuplicateRun(Exception):
    """The store already holds an order of this seed."""


async def run_traffic(
    store: OrderStore,
    orders: int,
    *,
    seed: int,
    concurrency: int = 8,
    rate: float | None = None,
    flaky_rate: float = 0.0,
    poison_rate: float = 0.0,
    on_event: Callable[[], None] | None = None,
) -> TrafficStats:
    """Drive `orders` orders through their life, interleaved across concurrent customers."""
    stats = TrafficStats()
    rng = random.Random(seed)
    open_orders: list[tuple[PlannedOrder, int]] = []  # (order, events written so far)
    next_index = 0
    started = time.monotonic()

    def record() -> None:
        stats.events += 1
        if on_event:
            on_event()

    async def place() -> None:
        nonlocal next_index
        index, next_index = next_index, next_index + 1
        if rate:
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
        order = plan_order(seed, index, flaky_rate, poison_rate)
        try:
            await store.place_order(order.customer_id, order.items, order_id=order.order_id)
        except IllegalTransition:
            raise DuplicateRun(
                f"order {order.order_id} already exists: seed {seed} was simulated into this "
                "store before; use another --seed or a fresh store"
            ) from None
        stats.orders += 1
        stats.flaky_orders += order.flaky
        stats.poison_orders += order.poison
        record()
        open_orders.append((order, 1))

    async def advance() -> None:
        order, done = open_orders.pop(rng.randrange(len(open_orders)))
        if done == 1:
            await store.pay(order.order_id, order.method)
            open_orders.append((order, 2))
        else:
            await store.ship(order.order_id, order.carrier, f"TRK{order.order_id[-7:]}")
            stats.shipped += 1
        record()

    async def customer() -> None:
        while next_index < orders or open_orders:
            if next_index < orders and (not open_orders or rng.random() < 0.4):
                await place()
            elif open_orders:
                await advance()
            else:
                await asyncio.sleep(0.001)  # the last orders are being advanced by others

    await asyncio.gather(*(customer() for _ in range(max(1, concurrency))))
    return stats
