"""recommendations: counts co-purchased SKU pairs on order.created."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import combinations

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    MetaData,
    String,
    Table,
    bindparam,
    select,
    tuple_,
)

from events import AnyEvent, OrderCreatedEvent
from workers.handlers.base import Handler
from workers.store import upsert


class RecommendationsHandler(Handler):
    """copurchase(sku_a < sku_b, count)."""

    name = "recommendations"

    def define_tables(self, metadata: MetaData) -> None:
        """copurchase(sku_a, sku_b, count)."""
        self.pairs = Table(
            "copurchase",
            metadata,
            Column("sku_a", String(200), primary_key=True),
            Column("sku_b", String(200), primary_key=True),
            Column("count", BigInteger, nullable=False),
        )
        pairs = self.pairs
        self._current = select(pairs.c.sku_a, pairs.c.sku_b, pairs.c.count).where(
            tuple_(pairs.c.sku_a, pairs.c.sku_b).in_(bindparam("keys", expanding=True))
        )

    def write(self, conn: Connection, events: Sequence[AnyEvent]) -> None:
        """Add one to every pair of distinct SKUs bought together."""
        seen: Counter[tuple[str, str]] = Counter()
        for e in events:
            if isinstance(e, OrderCreatedEvent):
                skus = sorted({i.sku for i in e.payload.items})
                seen.update(combinations(skus, 2))
        if not seen:
            return
        p = self.pairs
        rows = conn.execute(self._current, {"keys": list(seen)})
        current = {(a, b): int(n) for a, b, n in rows}
        conn.execute(
            upsert(conn, p, ["sku_a", "sku_b"], ["count"]),
            [
                {"sku_a": a, "sku_b": b, "count": current.get((a, b), 0) + n}
                for (a, b), n in seen.items()
            ],
        )
