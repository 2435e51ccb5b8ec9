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

from common.amqp import Received, connect, queue_depth
from events import headers as h
from events.codec import republished
from topology import names


class DeadMessage(Received):
    """One message in a DLQ, with its failure context."""

    __slots__ = ()

    @property
    def tag(self) -> int:
        """Its delivery tag on the DLQ tool's channel."""
        return self.delivery_tag

    @property
    def event_id(self) -> str:
        """The message_id (the event_id for well-formed events)."""
        return str(self.message_id or "")

    @property
    def order_id(self) -> str:
        """The order_id header ('' when missing)."""
        return h.order_id_of(self.headers)

    @property
    def seq(self) -> int:
        """The seq header (0 when missing or bad)."""
        return h.seq_of(self.headers)

    @property
    def reason(self) -> str:
        """x-dead-reason, or the broker's own reason (delivery-limit) from x-death."""
        return h.dead_reason_of(self.headers)

    def row(self) -> dict[str, Any]:
        """The fields `dlq list` shows."""
        return {
            "event_id": self.event_id,
            "order_id": self.order_id,
            "seq": self.seq,
            "type": self.type or "",
            "reason": self.reason,
            "error": str(self.headers.get(h.ERROR_MESSAGE, ""))[:120],
            "failed_at": str(self.headers.get(h.FAILED_AT, "")),
            "attempts": self.headers.get(h.ATTEMPTS, 0),
            "redriven": self.headers.get(h.REDRIVEN_COUNT, 0),
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
    headers = {k: v for k, v in m.headers.items() if k not in h.FAILURE_HEADERS}
    headers[h.ATTEMPTS] = 0
    headers[h.REDRIVEN_COUNT] = h.count_of(m.headers, h.REDRIVEN_COUNT) + 1
    headers[h.REDRIVEN_AT] = now
    return republished(m, headers)


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
        self._connection = await connect(self.amqp_url, "operator:dlq")
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
                self.messages.append(DeadMessage.of_frame(raw))
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
        return await queue_depth(self._channel, self.queue)

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
                asyncio.ensure_future(exchange.publish(_redriven(m, now), m.type or ""))
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
