"""loyalty: remembers each order's customer on created, credits points on paid."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import BigInteger, Column, Connection, MetaData, String, Table

from events import AnyEvent, OrderCreatedEvent, OrderPaidEvent
from workers.handlers.base import Handler
from workers.store import upsert, where_in


class LoyaltyHandler(Handler):
    """One point per whole unit paid, credited to the order's customer."""

    name = "loyalty"

    def define_tables(self, metadata: MetaData) -> None:
        """order_customer(order_id, customer_id), points(customer_id, points)."""
        self.order_customer = Table(
            "order_customer",
            metadata,
            Column("order_id", String(64), primary_key=True),
            Column("customer_id", String(200), nullable=False),
        )
        self.points = Table(
            "points",
            metadata,
            Column("customer_id", String(200), primary_key=True),
            Column("points", BigInteger, nullable=False),
        )
        self._owners = where_in(self.order_customer, "order_id", "order_id", "customer_id")
        self._balances = where_in(self.points, "customer_id", "customer_id", "points")

    def write(self, conn: Connection, events: Sequence[AnyEvent]) -> None:
        """Record customers of created orders; credit paid amounts."""
        created = [e for e in events if isinstance(e, OrderCreatedEvent)]
        if created:
            conn.execute(
                self.order_customer.insert(),
                [{"order_id": e.order_id, "customer_id": e.payload.customer_id} for e in created],
            )
        paid = [e for e in events if isinstance(e, OrderPaidEvent)]
        if not paid:
            return
        owners = dict(conn.execute(self._owners, {"keys": [e.order_id for e in paid]}).all())
        credit: dict[str, int] = defaultdict(int)
        for e in paid:
            credit[owners[e.order_id]] += int(e.payload.amount)
        balances = dict(conn.execute(self._balances, {"keys": list(credit)}).all())
        conn.execute(
            upsert(conn, self.points, ["customer_id"], ["points"]),
            [{"customer_id": c, "points": balances.get(c, 0) + p} for c, p in credit.items()],
        )
