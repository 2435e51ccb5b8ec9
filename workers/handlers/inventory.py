"""inventory: decrements stock per SKU on order.created; running out is recorded."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import Column, Connection, Integer, MetaData, String, Table

from events import AnyEvent, OrderCreatedEvent
from workers.handlers.base import Handler
from workers.store import upsert, where_in

SEED_STOCK = 10_000


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
        self._current = where_in(self.stock, "sku")

    def write(self, conn: Connection, events: Sequence[AnyEvent]) -> None:
        """Decrement stock for every item of every created order in the batch."""
        wanted: dict[str, int] = defaultdict(int)
        for event in events:
            if isinstance(event, OrderCreatedEvent):
                for item in event.payload.items:
                    wanted[item.sku] += item.qty
        if not wanted:
            return
        s = self.stock
        rows = conn.execute(self._current, {"keys": list(wanted)})
        current = {r.sku: r for r in rows}
        values = []
        for sku, qty in wanted.items():
            row = current.get(sku)
            on_hand = row.on_hand if row else SEED_STOCK
            taken = min(on_hand, qty)
            values.append(
                {
                    "sku": sku,
                    "on_hand": on_hand - taken,
                    "reserved": (row.reserved if row else 0) + qty,
                    "backordered": (row.backordered if row else 0) + qty - taken,
                }
            )
        conn.execute(upsert(conn, s, ["sku"], ["on_hand", "reserved", "backordered"]), values)
