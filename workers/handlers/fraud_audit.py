"""fraud_audit: appends every event to an audit trail and flags orders by simple rules."""

from __future__ import annotations

import time
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table

from events import AnyEvent, OrderCreatedEvent, OrderPaidEvent, PaymentMethod
from workers.api import Handler, Tx, insert_sql
from workers.handlers import SHIPPED_REVISIONS

LARGE_ORDER = Decimal("1000.00")
GIFT_CARD_LIMIT = Decimal("500.00")
_AUDIT = insert_sql("audit", ["event_id", "order_id", "seq", "event_type", "recorded_at_ms"])
_FLAG = insert_sql("flags", ["order_id", "rule"])


def flag_of(event: AnyEvent) -> str | None:
    """The rule an event trips, if any."""
    if isinstance(event, OrderCreatedEvent) and event.payload.total >= LARGE_ORDER:
        return "large-order"
    if (
        isinstance(event, OrderPaidEvent)
        and event.payload.method is PaymentMethod.GIFT_CARD
        and event.payload.amount >= GIFT_CARD_LIMIT
    ):
        return "high-value-gift-card"
    return None


class FraudAuditHandler(Handler):
    """audit(event_id, order_id, seq, event_type, recorded_at_ms), flags(order_id, rule)."""

    name = "fraud_audit"
    revisions = SHIPPED_REVISIONS / "fraud_audit"

    def define_tables(self, metadata: MetaData) -> None:
        """The audit trail and the flags."""
        self.audit = Table(
            "audit",
            metadata,
            Column("event_id", String(36), primary_key=True),
            Column("order_id", String(64), nullable=False),
            Column("seq", Integer, nullable=False),
            Column("event_type", String(32), nullable=False),
            Column("recorded_at_ms", BigInteger, nullable=False),
        )
        self.flags = Table(
            "flags",
            metadata,
            Column("order_id", String(64), primary_key=True),
            Column("rule", String(64), primary_key=True),
        )

    def write(self, tx: Tx, events: Sequence[AnyEvent]) -> None:
        """Audit every event; flag what trips a rule."""
        now = int(time.time() * 1000)
        tx.executemany(
            _AUDIT,
            [(str(e.event_id), e.order_id, e.seq, e.event_type.value, now) for e in events],
        )
        tx.executemany(_FLAG, [(e.order_id, r) for e in events if (r := flag_of(e))])
