"""inventory: decrements stock per SKU on order.created; running out is recorded."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import Column, Integer, MetaData, String, Table

from events import AnyEvent, OrderCreatedEvent
from workers.api import Handler, Tx
from workers.handlers import SHIPPED_REVISIONS

SEED_STOCK = 10_000
# One statement per SKU, relative to the row as it is when the statement runs: processes
# sharing the store (or a second transaction) never overwrite each other's reservations.
# `excluded.reserved` carries the quantity this batch wants.
_RESERVE = (
    "INSERT INTO stock (sku, on_hand, reserved, backordered) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (sku) DO UPDATE SET "
    "on_hand = CASE WHEN stock.on_hand > excluded.reserved "
    "THEN stock.on_hand - excluded.reserved ELSE 0 END, "
    "backordered = stock.backordered + CASE WHEN excluded.reserved > stock.on_hand "
    "THEN excluded.reserved - stock.on_hand ELSE 0 END, "
    "reserved = stock.reserved + excluded.reserved"
)


class InventoryHandler(Handler):
    """Stock per SKU, seeded on first sight; a shortfall goes to `backordered`."""

    name = "inventory"
    revisions = SHIPPED_REVISIONS / "inventory"

    def define_tables(self, metadata: MetaData) -> None:
        """stock(sku, on_hand, backordered, reserved)."""
        self.stock = Table(
            "stock",
            metadata,
            Column("sku", String(200), primary_key=True),
            Column("on_hand", Integer, nullable=False),
            Column("reserved", Integer, nullable=False),
            Column("backordered", Integer, nullable=False),
        )

    def write(self, tx: Tx, events: Sequence[AnyEvent]) -> None:
        """Reserve stock for every item of every created order in the batch."""
        wanted: dict[str, int] = defaultdict(int)
        for event in events:
            if isinstance(event, OrderCreatedEvent):
                for item in event.payload.items:
                    wanted[item.sku] += item.qty
        # In SKU order, so two transactions lock their rows in the same order (no deadlock).
        tx.executemany(
            _RESERVE,
            [
                (sku, max(SEED_STOCK - qty, 0), qty, max(qty - SEED_STOCK, 0))
                for sku, qty in sorted(wanted.items())
            ],
        )
