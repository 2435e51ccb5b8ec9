"""One session's deliveries in per-order lanes: each order's events one after another."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable
from dataclasses import dataclass

import structlog

from broker.received import Received
from events import AnyEvent, MalformedEvent, decode
from events.evolution import UnsupportedVersion
from workers.applying.guard import OrderingGuard, Waited
from workers.applying.progress import ProgressCache
from workers.metrics import DownstreamMetrics
from workers.session.acks import Acker
from workers.session.divert import Divert

log = structlog.get_logger("workers")


@dataclass(slots=True)
class Delivery:
    """A received message, its decoded event (or why a newer version could not be), and
    where to settle it."""

    message: Received
    shard: str
    acker: Acker
    event: AnyEvent | None = None
    unsupported: UnsupportedVersion | None = None

    @property
    def event_id(self) -> str:
        """The event's id as text (decode checked that the message_id carries it)."""
        if self.message.message_id:
            return self.message.message_id
        return str(self.event.event_id) if self.event else ""

    @property
    def order_id(self) -> str:
        """The order it belongs to (decode checked it against the header)."""
        return self._identity.order_id

    @property
    def seq(self) -> int:
        """Its place in the order's life."""
        return self._identity.seq

    @property
    def _identity(self) -> AnyEvent | UnsupportedVersion:
        source = self.event or self.unsupported
        assert source is not None, "a delivery is decoded before it is handled"
        return source


class Lanes:
    """Decodes each delivery, runs it in its order's lane, and settles it on its channel.

    Orders run concurrently (as many as `slots` lets in); one order's deliveries run strictly in
    arrival order. A delivery is acked once the guard is done with it, and handed back to
    its queue when it could not be dealt with; with `ack_first` (at-most-once) it is acked
    as it arrives.
    """

    def __init__(
        self,
        name: str,
        guard: OrderingGuard,
        divert: Divert,
        *,
        cache: ProgressCache,
        slots: asyncio.Semaphore,
        metrics: DownstreamMetrics,
        ack_first: bool = False,
    ) -> None:
        self.name = name
        self.guard = guard
        self.divert = divert
        self.cache = cache
        self.slots = slots  # orders handled at once (the downstream's concurrency)
        self.metrics = metrics
        self.ack_first = ack_first
        self.lanes: dict[str, deque[Delivery | Waited]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.holding = 0  # deliveries received and not yet settled
        self.by_shard: Counter[str] = Counter()  # the same, per shard
        self._drained: dict[str, asyncio.Event] = {}  # shards being given up
        self.released: set[str] = set()  # held events queued in a lane by the sweeper
        self.debug = log.bind().is_enabled_for(logging.DEBUG)  # checked before building a line

    def on_message(self, shard: str, acker: Acker, message: Received) -> None:
        """The consumer's callback, called as each delivery arrives: no task unless it
        starts a lane."""
        self.metrics.consumed.inc()
        if message.redelivered:
            self.metrics.redelivered.inc()
        self.holding += 1
        self.by_shard[shard] += 1
        if self.debug:
            log.debug(
                "worker.received",
                downstream=self.name,
                shard=shard,
                event_id=message.message_id,
                tag=message.delivery_tag,
                redelivered=message.redelivered,
            )
        delivery = Delivery(message, shard, acker)
        if self.ack_first:
            acker.complete(message.delivery_tag)
        try:
            delivery.event = decode(message)
        except UnsupportedVersion as exc:
            delivery.unsupported = exc  # its order's lane parks the order behind it
        except MalformedEvent as exc:
            self._start(
                self._run(delivery, self.guard.dead_letter_malformed(delivery, exc, self.divert))
            )
            return
        order_id = delivery.order_id
        lane = self.lanes.get(order_id)
        if lane is not None:
            lane.append(delivery)
            return
        self.cache.prefetch(order_id)
        lane = self.lanes[order_id] = deque([delivery])
        self._start(self._run_lane(order_id, lane))

    def release(self, waited: Waited) -> None:
        """Run an event the store held for its predecessor in its order's lane (the
        sweeper's: its predecessor was applied elsewhere, its order parked, or its wait ran
        out)."""
        if self.guard.is_held(waited.event_id) or waited.event_id in self.released:
            return
        self.released.add(waited.event_id)
        order_id = waited.order_id
        lane = self.lanes.get(order_id)
        if lane is not None:
            lane.append(waited)
            return
        lane = self.lanes[order_id] = deque([waited])
        self._start(self._run_lane(order_id, lane))

    def _start(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run_lane(self, order_id: str, lane: deque[Delivery | Waited]) -> None:
        try:
            async with self.slots:
                while lane:
                    delivery = lane.popleft()
                    if isinstance(delivery, Waited):
                        await self._run_held(delivery)
                    else:
                        await self._run(delivery, self.guard.handle(delivery, self.divert))
        finally:
            if self.lanes.get(order_id) is lane:
                del self.lanes[order_id]

    async def _run(self, d: Delivery, step: Awaitable[None]) -> None:
        """Await one delivery's step; settle it, or hand it back when the step failed."""
        try:
            await step
        except Exception as exc:
            # Not settled: the delivery goes back to the queue (and counts toward the
            # delivery limit) rather than being lost.
            log.error(
                "worker.unhandled",
                downstream=self.name,
                shard=d.shard,
                event_id=d.message.message_id,
                error=repr(exc),
            )
            self._done(d, hand_back=True)
            return
        self._done(d, hand_back=False)

    async def _run_held(self, w: Waited) -> None:
        """A held event: nothing to settle on the broker; a failure leaves its row waiting."""
        try:
            await self.guard.handle(w, self.divert)
        except Exception as exc:
            log.warning(
                "worker.waiting_failed", downstream=self.name, event_id=w.event_id, error=repr(exc)
            )
        finally:
            self.released.discard(w.event_id)

    def _done(self, d: Delivery, hand_back: bool) -> None:
        self.holding -= 1
        self.by_shard[d.shard] -= 1
        if not self.by_shard[d.shard] and (drained := self._drained.get(d.shard)):
            drained.set()
        if self.ack_first:
            return
        if hand_back:
            d.acker.hand_back(d.message.delivery_tag)
        else:
            d.acker.complete(d.message.delivery_tag)

    async def drain(self, shard: str, within: float) -> bool:
        """Wait until no delivery of `shard` is held (its consumer is cancelled); False when
        `within` ran out first (closing its channel then hands the rest back)."""
        if not self.by_shard[shard]:
            return True
        drained = self._drained[shard] = asyncio.Event()
        try:
            await asyncio.wait_for(drained.wait(), within)
            return True
        except TimeoutError:
            return False
        finally:
            del self._drained[shard]

    async def wind_down(self, within: float) -> None:
        """Let the lanes in flight finish (cancel what outlasts `within`)."""
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=within)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        self.lanes.clear()
