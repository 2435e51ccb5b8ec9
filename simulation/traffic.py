"""Simulated order traffic: orders through created -> paid -> shipped, via the outbox."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from events import IllegalTransition
from simulation.orders import OrderStore
from simulation.planned import PlannedOrder, plan_order


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
    traffic = _Traffic(store, orders, seed, rate, flaky_rate, poison_rate, on_event)
    await asyncio.gather(*(traffic.customer() for _ in range(max(1, concurrency))))
    return traffic.stats


@dataclass
class _Traffic:
    """Orders placed in index order (paced at `rate`), advanced in random order."""

    store: OrderStore
    orders: int
    seed: int
    rate: float | None
    flaky_rate: float
    poison_rate: float
    on_event: Callable[[], None] | None
    stats: TrafficStats = field(default_factory=TrafficStats)
    open: list[tuple[PlannedOrder, int]] = field(default_factory=list)  # (order, events so far)
    next_index: int = 0
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    async def customer(self) -> None:
        """One customer: places new orders or advances open ones until all are shipped."""
        while self.next_index < self.orders or self.open:
            if self.next_index < self.orders and (not self.open or self.rng.random() < 0.4):
                await self._place()
            elif self.open:
                await self._advance()
            else:
                await asyncio.sleep(0.001)  # the last orders are being advanced by others

    def _record(self) -> None:
        self.stats.events += 1
        if self.on_event:
            self.on_event()

    async def _place(self) -> None:
        index, self.next_index = self.next_index, self.next_index + 1
        if self.rate:
            await asyncio.sleep(max(0.0, self.started + index / self.rate - time.monotonic()))
        order = plan_order(self.seed, index, self.flaky_rate, self.poison_rate)
        try:
            await self.store.place_order(order.customer_id, order.items, order_id=order.order_id)
        except IllegalTransition:
            raise DuplicateRun(
                f"order {order.order_id} already exists: seed {self.seed} was simulated into "
                "this store before; use another --seed or a fresh store"
            ) from None
        self.stats.orders += 1
        self.stats.flaky_orders += order.flaky
        self.stats.poison_orders += order.poison
        self._record()
        self.open.append((order, 1))

    async def _advance(self) -> None:
        order, done = self.open.pop(self.rng.randrange(len(self.open)))
        if done == 1:
            await self.store.pay(order.order_id, order.method)
            self.open.append((order, 2))
        else:
            await self.store.ship(order.order_id, order.carrier, order.tracking_number)
            self.stats.shipped += 1
        self._record()
