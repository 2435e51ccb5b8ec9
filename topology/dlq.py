"""Reading and moving a downstream's dead letters: list, show, redrive in order, purge."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aiormq.abc import DeliveredMessage

from events.codec import BROKER_DEATH_HEADERS, republished
from topology import names

# Headers that describe a failure or a retry; a redriven message starts afresh without them.
_FAILURE_HEADERS = BROKER_DEATH_HEADERS | {
    "x-attempts",
    "x-deferrals",
    "x-dead-reason",
    "x-error-type",
    "x-error-message",
    "x-error-stack",
    "x-failed-at",
    "x-failed-queue",
}


@dataclass
class DeadMessage:
    """One message in a DLQ, with its failure context."""

    tag: int
    body: bytes
    properties: Any
    headers: dict[str, Any]

    @property
    def event_id(self) -> str:
        """The message_id (the event_id for well-formed events)."""
        return str(self.properties.message_id or "")

    # The properties a republished copy keeps (events.codec.ReceivedLike).
    @property
    def message_id(self) -> str | None:
        """The message_id property."""
        return self.properties.message_id  # type: ignore[no-any-return]

    @property
    def type(self) -> str | None:
        """The type property (the event type)."""
        return self.properties.message_type  # type: ignore[no-any-return]

    @property
    def content_type(self) -> str | None:
        """The content_type property."""
        return self.properties.content_type  # type: ignore[no-any-return]

    @property
    def timestamp(self) -> datetime | None:
        """The timestamp property."""
        return self.properties.timestamp  # type: ignore[no-any-return]

    @property
    def app_id(self) -> str | None:
        """The app_id property."""
        return self.properties.app_id  # type: ignore[no-any-return]

    @property
    def order_id(self) -> str:
        """The order_id header ('' when missing)."""
        value = self.headers.get("order_id")
        return value.decode() if isinstance(value, bytes) else str(value or "")

    @property
    def seq(self) -> int:
        """The seq header (0 when missing or bad)."""
        value = self.headers.get("seq")
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    @property
    def reason(self) -> str:
        """x-dead-reason, or the broker's own reason (delivery-limit) from x-death."""
        if reason := self.headers.get("x-dead-reason"):
            return str(reason)
        deaths = self.headers.get("x-death") or []
        if deaths and isinstance(deaths[0], dict):
            return str(deaths[0].get("reason", "unknown")).replace("_", "-")
        return "unknown"

    def row(self) -> dict[str, Any]:
        """The fields `dlq list` shows."""
        return {
            "event_id": self.event_id,
            "order_id": self.order_id,
            "seq": self.seq,
            "type": self.type or "",
            "reason": self.reason,
            "error": str(self.headers.get("x-error-message", ""))[:120],
            "failed_at": str(self.headers.get("x-failed-at", "")),
            "attempts": self.headers.get("x-attempts", 0),
            "redriven": self.headers.get("x-redriven-count", 0),
        }


@dataclass(frozen=True)
class Filter:
    """Which dead letters an operator means."""

    order_id: str | None = None
    reason: str | None = None

    def __call__(self, m: DeadMessage) -> bool:
        return (self.order_id is None or m.order_id == self.order_id) and (
            self.reason is None or m.reason == self.reason
        )


def _redriven(m: DeadMessage, now: str) -> aio_pika.Message:
    """The message as it goes back: failure context dropped, attempts reset, redrive counted."""
    headers = {k: v for k, v in m.headers.items() if k not in _FAILURE_HEADERS}
    headers["x-attempts"] = 0
    headers["x-redriven-count"] = int(m.headers.get("x-redriven-count", 0) or 0) + 1
    headers["x-redriven-at"] = now
    return republished(m, headers)


class UnknownDownstream(ValueError):
    """An operator named a downstream the topology does not have."""


class DeadLetters:
    """A downstream's DLQ, held by one consumer while an operator command runs.

    Every message is received and none is acked until the command decides; what it does
    not take goes back to the queue in its order when the channel closes.
    """

    def __init__(self, amqp_url: str, downstream: str) -> None:
        self.amqp_url = amqp_url
        self.downstream = downstream
        self.queue = names.dlq(downstream)
        self.messages: list[DeadMessage] = []

    async def __aenter__(self) -> DeadLetters:
        self._connection = await aio_pika.connect(self.amqp_url)
        # A redrive the hash exchange cannot route raises; its DLQ copy stays.
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._raw = await self._channel.get_underlay_channel()
        depth = await self._depth()
        if depth:
            await self._raw.basic_qos(prefetch_count=depth)
            done = asyncio.get_running_loop().create_future()

            async def take(raw: DeliveredMessage) -> None:
                props = raw.header.properties
                tag = getattr(raw.delivery, "delivery_tag", 0) or 0
                self.messages.append(DeadMessage(tag, raw.body, props, dict(props.headers or {})))
                if len(self.messages) >= depth and not done.done():
                    done.set_result(None)

            ok = await self._raw.basic_consume(self.queue, take, no_ack=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done, 30)
            await self._raw.basic_cancel(str(ok.consumer_tag))
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Closing the channel returns every unacked message to the queue.
        await self._connection.close()

    async def _depth(self) -> int:
        queue = await self._channel.declare_queue(self.queue, passive=True)
        return int(queue.declaration_result.message_count or 0)

    def select(self, keep: Filter, limit: int | None = None) -> list[DeadMessage]:
        """Matching messages in queue order, at most `limit`."""
        chosen = [m for m in self.messages if keep(m)]
        return chosen[:limit] if limit is not None else chosen

    async def redrive(
        self,
        chosen: Sequence[DeadMessage],
        on_moved: Callable[[DeadMessage], None] | None = None,
        window: int = 256,
    ) -> list[DeadMessage]:
        """Publish chosen messages back to the downstream, order by order in seq order.

        Publishes on one channel keep their order, so a window of them is in flight at once;
        each DLQ copy is acked only after its own publish was confirmed.
        """
        exchange = await self._channel.get_exchange(
            names.hash_exchange(self.downstream), ensure=False
        )
        ordered = sorted(chosen, key=lambda m: (m.order_id, m.seq, m.tag))
        now = datetime.now(UTC).isoformat()
        moved: list[DeadMessage] = []
        for start in range(0, len(ordered), window):
            batch = ordered[start : start + window]
            confirms = [
                asyncio.ensure_future(
                    exchange.publish(_redriven(m, now), m.properties.message_type or "")
                )
                for m in batch
            ]
            results = await asyncio.gather(*confirms, return_exceptions=True)
            for m, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    continue  # stays in the DLQ (the channel closes unacked): nothing is lost
                await self._raw.basic_ack(m.tag)
                moved.append(m)
                if on_moved:
                    on_moved(m)
            if len(moved) < start + len(batch):
                failed = next(r for r in results if isinstance(r, BaseException))
                raise failed
        return moved

    async def drop(self, chosen: Sequence[DeadMessage]) -> int:
        """Remove chosen messages for good."""
        for m in chosen:
            await self._raw.basic_ack(m.tag)
        return len(chosen)
