"""Reading and moving a downstream's dead letters: list, show, redrive in order, purge."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika

from broker.channel import ConsumerChannel
from broker.connect import connect
from broker.consumer import ConsumerConnection, open_consumer
from broker.queues import queue_counts
from broker.received import Received
from events import headers as h
from events.codec import republished
from topology import names

# Each page of a DLQ is read on its own channel with this prefetch, and held there unacked
# until the command ends: a page's prefetch stays within AMQP's 16-bit field whatever the
# depth, and pages read one after the other keep the queue's order.
PAGE = 5_000
# A page that receives nothing for this long ends the read early.
IDLE = 5.0
# How long a command waits, when it ends, for the queue to count what it gave back.
GIVE_BACK_WAIT = 10.0
# How long a command that acked waits before closing its channels (see _ack_all).
SETTLE_GRACE = 0.2


class DeadMessage(Received):
    """One message in a DLQ, with its failure context."""

    __slots__ = ("page", "position")
    page: int  # which page's channel holds it
    position: int  # where it stood in the queue when read

    @classmethod
    def read(cls, m: Received, page: int, position: int) -> DeadMessage:
        """A delivered message as the page and the place it was read at."""
        dead = cls(
            m.body,
            m.headers,
            m.message_id,
            m.type,
            m.content_type,
            m.timestamp,
            m.app_id,
            m.delivery_tag,
            m.redelivered,
            m.routing_key,
        )
        dead.page, dead.position = page, position
        return dead

    @property
    def tag(self) -> int:
        """Its delivery tag on its page's channel."""
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
    """A downstream's DLQ, held while an operator command runs.

    The queue is read page by page, each page on its own channel with a bounded prefetch, and
    nothing is acked until the command decides; what it does not take goes back to the queue
    in its order when the connection closes. `enough` ends the read early once it holds what
    the command needs (`show` stops at its event).
    """

    def __init__(
        self,
        amqp_url: str,
        downstream: str,
        *,
        page: int = PAGE,
        idle: float | None = None,
        enough: Callable[[list[DeadMessage]], bool] | None = None,
    ) -> None:
        self.amqp_url = amqp_url
        self.downstream = downstream
        self.queue = names.dlq(downstream)
        self.messages: list[DeadMessage] = []
        self.depth = 0  # the queue's ready messages when the read began
        self.others = 0  # other consumers on the queue then, each holding what it read
        self._page, self._enough = page, enough
        self._idle = IDLE if idle is None else idle
        self._pages: list[ConsumerChannel] = []
        self._held: list[list[int]] = []  # each page's read tags not acked, ascending
        self._acked = 0

    @property
    def complete(self) -> bool:
        """Whether the read holds the whole queue as it was when the read began."""
        return len(self.messages) >= self.depth and not self.others

    @property
    def shortfall(self) -> str:
        """Why the read holds less than the whole queue, in words ('' when it does not)."""
        if self.complete or (self._enough and self._enough(self.messages)):
            return ""
        if self.others:
            why = (
                f"{self.others} other consumer(s) (a running dlq or status command) hold "
                "the messages they read, which this read cannot see"
            )
        else:
            why = f"no more arrived for {self._idle:g} s"
        return (
            f"read {len(self.messages):,} of the {self.depth:,} ready dead letters in "
            f"{self.queue}: {why}; this result is partial, run it again when that has ended"
        )

    async def __aenter__(self) -> DeadLetters:
        # Reading goes through the workers' own consumer (the project's one consuming path);
        # publishing a redrive, with confirms and returns, through aio-pika.
        self._consumer: ConsumerConnection = await open_consumer(self.amqp_url, "operator:dlq")
        self._connection = await connect(self.amqp_url, "operator:dlq")
        # A redrive the hash exchange cannot route raises; its DLQ copy stays.
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self.depth, self.others = await queue_counts(self._channel, self.queue)
        while len(self.messages) < self.depth:
            if self._enough and self._enough(self.messages):
                break
            if not await self._read_page(min(self._page, self.depth - len(self.messages))):
                break
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if not self._connection.is_closed and not self._channel.is_closed:
                await self._give_back()
        finally:
            await self._connection.close()
            await self._consumer.close()

    async def _give_back(self) -> None:
        """Return what is held and wait (briefly) until the queue counts it as ready again.

        A quorum queue applies the return of a closed channel's messages a moment later; a
        command started right after would otherwise read the queue out of order, without them.
        """
        if self._acked:
            # Acks went out: a reply on each page's channel shows the broker has read them,
            # and a moment lets the quorum queue's client send settlements it held back.
            for page in self._pages:
                await page.qos(1)
            await asyncio.sleep(SETTLE_GRACE)
        for page in self._pages:
            await page.close()  # its unacked messages go back, in their order
        expected = self.depth - self._acked
        deadline = asyncio.get_running_loop().time() + GIVE_BACK_WAIT
        while asyncio.get_running_loop().time() < deadline:
            ready, _ = await queue_counts(self._channel, self.queue)
            if ready >= expected:
                return
            await asyncio.sleep(0.05)

    async def _read_page(self, size: int) -> bool:
        """Hold the next `size` messages on a fresh channel; whether all of them came.

        The page's consumer stays until the command ends, with its prefetch full: the broker
        sends it nothing more, the next page starts after it, and another command sees it
        in the queue's consumer count. What it is sent once the read is over (after a
        redrive's acks) is held unread and handed back at the end.
        """
        channel = await self._consumer.channel()
        await channel.qos(size)
        page, wanted = len(self._pages), len(self.messages) + size
        arrived = asyncio.Event()

        def take(received: Received) -> None:
            if len(self.messages) >= wanted:
                return
            m = DeadMessage.read(received, page, len(self.messages))
            self.messages.append(m)
            held.append(m.tag)
            arrived.set()

        held: list[int] = []
        self._held.append(held)
        await channel.consume(self.queue, take)
        self._pages.append(channel)
        while True:
            arrived.clear()
            if len(self.messages) >= wanted or (self._enough and self._enough(self.messages)):
                break
            try:
                await asyncio.wait_for(arrived.wait(), self._idle)
            except TimeoutError:
                break
        full = len(self.messages) >= wanted
        wanted = len(self.messages)  # what the broker sends this consumer from now stays unread
        return full

    async def _ack_all(self, chosen: Sequence[DeadMessage]) -> None:
        """Ack these messages in as few frames as their pages allow.

        A quorum queue's client holds back settlements once too many are pending, and a
        channel closed meanwhile never sends them: the broker would return messages that
        were acked (duplicates). One multiple ack per page for the run of held tags that
        are all chosen, and single acks only for the rest, keeps them few.
        """
        by_page: dict[int, set[int]] = defaultdict(set)
        for m in chosen:
            by_page[m.page].add(m.tag)
        for page, tags in by_page.items():
            held, channel = self._held[page], self._pages[page]
            run = 0
            for tag in held:
                if tag not in tags:
                    break
                run = tag
            if run:
                channel.ack(run, multiple=True)
            for tag in sorted(tags):
                if tag > run:
                    channel.ack(tag)
            self._held[page] = [t for t in held if t not in tags]
            self._acked += len(tags)

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
        the DLQ copies are acked once their publishes were confirmed, together at the end
        (a copy whose publish failed stays in the DLQ: nothing is lost).
        """
        exchange = await self._channel.get_exchange(
            names.hash_exchange(self.downstream), ensure=False
        )
        ordered = sorted(chosen, key=lambda m: (m.order_id, m.seq, m.position))
        now = datetime.now(UTC).isoformat()
        moved: list[DeadMessage] = []
        failed: BaseException | None = None
        for start in range(0, len(ordered), window):
            batch = ordered[start : start + window]
            confirms = [
                asyncio.ensure_future(exchange.publish(_redriven(m, now), m.type or ""))
                for m in batch
            ]
            results = await asyncio.gather(*confirms, return_exceptions=True)
            for m, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    failed = failed or result
                    continue
                moved.append(m)
                if on_moved:
                    on_moved(m)
            if failed is not None:
                break
        await self._ack_all(moved)
        if failed is not None:
            raise failed
        return moved

    async def drop(self, chosen: Sequence[DeadMessage]) -> int:
        """Remove chosen messages for good."""
        await self._ack_all(chosen)
        return len(chosen)
