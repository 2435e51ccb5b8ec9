"""Reading and marking the outbox: what the relay needs, in batches."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from events import AnyEvent
from events.codec import message_for
from producer.db import outbox


def outbox_values(event: AnyEvent) -> dict[str, Any]:
    """The outbox row of an event (its id is given by the database)."""
    return {
        "event_id": str(event.event_id),
        "order_id": event.order_id,
        "seq": event.seq,
        "event_type": event.event_type.value,
        "occurred_at_ms": int(event.occurred_at.timestamp() * 1000),
        "body": event.model_dump_json().encode(),
    }


_ROW_COLUMNS = (
    outbox.c.id,
    outbox.c.event_id,
    outbox.c.order_id,
    outbox.c.seq,
    outbox.c.event_type,
    outbox.c.occurred_at_ms,
    outbox.c.body,
)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One unsent event."""

    id: int
    event_id: str
    order_id: str
    seq: int
    event_type: str
    occurred_at_ms: int
    body: bytes

    def message(self, app_id: str) -> aio_pika.Message:
        """The AMQP message for this row, per the wire contract."""
        return message_for(
            self.body,
            event_id=self.event_id,
            event_type=self.event_type,
            order_id=self.order_id,
            seq=self.seq,
            occurred_at=datetime.fromtimestamp(self.occurred_at_ms / 1000, UTC),
            app_id=app_id,
        )


class Outbox:
    """The outbox table seen by the relay."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def fetch_unsent(self, after_id: int, limit: int) -> list[OutboxRow]:
        """Unsent rows with id > after_id, in id order."""
        query = (
            select(*_ROW_COLUMNS)
            .where(outbox.c.sent_at_ms.is_(None), outbox.c.id > after_id)
            .order_by(outbox.c.id)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [OutboxRow(*row) for row in rows]

    async def fetch_ids(self, ids: Sequence[int]) -> list[OutboxRow]:
        """Those of these rows that exist and are unsent, in id order."""
        query = (
            select(*_ROW_COLUMNS)
            .where(outbox.c.sent_at_ms.is_(None), outbox.c.id.in_(list(ids)))
            .order_by(outbox.c.id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [OutboxRow(*row) for row in rows]

    async def mark_sent(self, ids: Sequence[int]) -> None:
        """Mark confirmed rows sent, in one statement."""
        if not ids:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                update(outbox)
                .where(outbox.c.id.in_(ids))
                .values(sent_at_ms=int(time.time() * 1000))
            )

    async def backlog(self) -> int:
        """How many rows are not yet confirmed by the broker."""
        async with self.engine.connect() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(outbox).where(outbox.c.sent_at_ms.is_(None))
            )
        return int(count or 0)
