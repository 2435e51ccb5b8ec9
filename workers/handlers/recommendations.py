"""recommendations: counts co-purchased SKU pairs on order.created."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import combinations

from sqlalchemy import BigInteger, Column, MetaData, String, Table

from events import AnyEvent, OrderCreatedEvent
from workers.api import Handler, Tx
from workers.handlers import SHIPPED_REVISIONS

# Relative to the row as the statement finds it: concurrent transactions add up.
_COUNT = (
    "INSERT INTO copurchase (sku_a, sku_b, count) VALUES (?, ?, ?) "
    "ON CONFLICT (sku_a, sku_b) DO UPDATE SET count = copurchase.count + excluded.count"
)


class RecommendationsHandler(Handler):
    """copurchase(sku_a < sku_b, count)."""

    name = "recommendations"
    revisions = SHIPPED_REVISIONS / "recommendations"

    def define_tables(self, metadata: MetaData) -> None:
        """copurchase(sku_a, sku_b, count)."""
        self.pairs = Table(
            "copurchase",
            metadata,
            Column("sku_a", String(200), primary_key=True),
            Column("sku_b", String(200), primary_key=True),
            Column("count", BigInteger, nullable=False),
        )

    def write(self, tx: Tx, events: Sequence[AnyEvent]) -> None:
        """Add one to every pair of distinct SKUs bought together."""
        seen: Counter[tuple[str, str]] = Counter()
        for e in events:
            if isinstance(e, OrderCreatedEvent):
                skus = sorted({i.sku for i in e.payload.items})
                seen.update(combinations(skus, 2))
        if not seen:
            return
        tx.executemany(_COUNT, [(a, b, n) for (a, b), n in sorted(seen.items())])
