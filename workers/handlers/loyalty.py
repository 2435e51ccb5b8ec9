"""loyalty: remembers each order's customer on created, credits points on paid."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import BigInteger, Column, MetaData, String, Table

from events import AnyEvent, OrderCreatedEvent, OrderPaidEvent
from workers.api import Handler, Tx, insert_sql
from workers.handlers import SHIPPED_REVISIONS

_REMEMBER = insert_sql("order_customer", ["order_id", "customer_id"])
_OWNERS = "SELECT order_id, customer_id FROM order_customer WHERE order_id IN {in}"
# Relative to the row as the statement finds it: concurrent transactions add up.
_CREDIT = (
    "INSERT INTO points (customer_id, points) VALUES (?, ?) "
    "ON CONFLICT (customer_id) DO UPDATE SET points = points.points + excluded.points"
)


class LoyaltyHandler(Handler):
    """One point per whole unit paid, credited to the order's customer."""

    name = "loyalty"
    revisions = SHIPPED_REVISIONS / "loyalty"

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

    def write(self, tx: Tx, events: Sequence[AnyEvent]) -> None:
        """Record customers of created orders; credit paid amounts."""
        tx.executemany(
            _REMEMBER,
            [
                (e.order_id, e.payload.customer_id)
                for e in events
                if isinstance(e, OrderCreatedEvent)
            ],
        )
        paid = [e for e in events if isinstance(e, OrderPaidEvent)]
        if not paid:
            return
        owners: dict[str, str] = dict(tx.select_in(_OWNERS, [e.order_id for e in paid]))
        credit: dict[str, int] = defaultdict(int)
        for e in paid:
            credit[owners[e.order_id]] += int(e.payload.amount)
        tx.executemany(_CREDIT, sorted(credit.items()))  # one lock order for every transaction
