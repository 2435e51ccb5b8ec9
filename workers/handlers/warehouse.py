"""warehouse: appends every event as a fact row, a batch per transaction."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text

from events import AnyEvent
from workers.api import Handler, Tx, insert_sql
from workers.handlers import SHIPPED_REVISIONS

_FACT = insert_sql(
    "facts",
    ["event_id", "order_id", "seq", "event_type", "occurred_at_ms", "payload", "loaded_at_ms"],
)


class WarehouseHandler(Handler):
    """facts(event_id, order_id, seq, event_type, occurred_at_ms, payload, loaded_at_ms)."""

    name = "warehouse"
    revisions = SHIPPED_REVISIONS / "warehouse"

    def define_tables(self, metadata: MetaData) -> None:
        """The fact table."""
        self.facts = Table(
            "facts",
            metadata,
            Column("event_id", String(36), primary_key=True),
            Column("order_id", String(64), nullable=False),
            Column("seq", Integer, nullable=False),
            Column("event_type", String(32), nullable=False),
            Column("occurred_at_ms", BigInteger, nullable=False),
            Column("payload", Text, nullable=False),
            Column("loaded_at_ms", BigInteger, nullable=False),
        )

    def write(self, tx: Tx, events: Sequence[AnyEvent]) -> None:
        """One fact row per event."""
        loaded = int(time.time() * 1000)
        tx.executemany(
            _FACT,
            [
                (
                    str(e.event_id),
                    e.order_id,
                    e.seq,
                    e.event_type.value,
                    int(e.occurred_at.timestamp() * 1000),
                    e.payload.model_dump_json(),
                    loaded,
                )
                for e in events
            ],
        )
