"""A small order service of its own: its orders table, and the bus's events written with each
change in the same transaction (`producer.api`). Run it with `python shop.py --orders 20`.

It knows the bus only through the producer API; the relay (`python -m producer relay`) runs
beside it and publishes what it writes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
from decimal import Decimal

from sqlalchemy import Column, MetaData, Numeric, String, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from producer.api import (
    IllegalTransition,
    LineItem,
    PaymentMethod,
    created,
    emit_async,
    paid,
    shipped,
)

metadata = MetaData()
orders = Table(
    "shop_orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("customer", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("total", Numeric(14, 2), nullable=False),
)


async def place_order(
    conn: AsyncConnection, order_id: str, customer: str, items: list[LineItem]
) -> None:
    """A new order, and its order.created event, in the caller's transaction."""
    event = created(order_id, customer, items)
    await conn.execute(
        insert(orders).values(
            order_id=order_id, customer=customer, status="created", total=event.payload.total
        )
    )
    await emit_async(conn, event)


async def pay(conn: AsyncConnection, order_id: str, method: PaymentMethod) -> None:
    """The order paid in full, and its order.paid event, in the caller's transaction."""
    total = (
        await conn.execute(select(orders.c.total).where(orders.c.order_id == order_id))
    ).scalar_one()
    await conn.execute(update(orders).where(orders.c.order_id == order_id).values(status="paid"))
    await emit_async(conn, paid(order_id, Decimal(total), method))


async def ship(conn: AsyncConnection, order_id: str, carrier: str, tracking: str) -> None:
    """The order handed to a carrier, and its order.shipped event, in the caller's transaction."""
    await conn.execute(update(orders).where(orders.c.order_id == order_id).values(status="shipped"))
    await emit_async(conn, shipped(order_id, carrier, tracking))


async def main(dsn: str, count: int, seed: int) -> None:
    """Create, pay and ship `count` orders, each step its own transaction."""
    rng = random.Random(seed)
    engine = create_async_engine(dsn)
    try:
        for n in range(count):
            order_id = f"shop-{seed}-{n:05d}"
            items = [
                LineItem(
                    sku=f"SKU-{rng.randint(1, 50):03d}",
                    qty=rng.randint(1, 3),
                    price=Decimal("9.99"),
                )
            ]
            async with engine.begin() as conn:
                await place_order(conn, order_id, f"customer-{n % 7}", items)
            async with engine.begin() as conn:
                await pay(conn, order_id, rng.choice(list(PaymentMethod)))
            async with engine.begin() as conn:
                await ship(conn, order_id, "DHL", f"TRK{n:07d}")
            try:  # paying twice is refused: the order has moved on
                async with engine.begin() as conn:
                    await pay(conn, order_id, PaymentMethod.CARD)
            except IllegalTransition as refused:
                print(f"{order_id}: {refused}")
    finally:
        await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=20, help="orders to create, pay and ship")
    parser.add_argument("--seed", type=int, default=1, help="makes the orders reproducible")
    args = parser.parse_args()
    asyncio.run(main(os.environ["SHOP_DSN"], args.orders, args.seed))
