"""inventory: decrements stock per SKU on order.created; running out is recorded."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import Column, Integer, MetaData, String, Table

from events import AnyEvent, OrderCreatedEvent
from workers.handlers.base import Handler
from workers.tx import Tx, upsert_sql

SEED_STOCK = 10_000
_CURRENT = "SELECT sku, on_hand, reserved, backordered FROM stock WHERE sku IN {in}"
_UPSERT = upsert_sql("stock", ["sku"], ["on_hand", "reserved", "backordered"])


class InventoryHandler(Handler):
    """Stock per SKU, seeded on first sight; a shortfall goes to `backordered`."""

    name = "inventory"

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
        """Decrement stock for every item of every created order in the batch."""
        wanted: dict[str, int] = defaultdict(int)
        for event in events:
            if isinstance(event, OrderCreatedEvent):
                for item in event.payload.items:
                    wanted[item.sku] += item.qty
        if not wanted:
            return
        current = {row[0]: row[1:] for row in tx.select_in(_CURRENT, list(wanted))}
        rows = []
        for sku, qty in wanted.items():
            on_hand, reserved, backordered = current.get(sku, (SEED_STOCK, 0, 0))
            taken = min(on_hand, qty)
            rows.append((sku, on_hand - taken, reserved + qty, backordered + qty - taken))
        tx.executemany(_UPSERT, rows)
