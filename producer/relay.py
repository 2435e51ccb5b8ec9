"""The outbox relay: publishes unsent rows in order with a window of confirms in flight."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import KW_ONLY, dataclass, field
from functools import partial
from typing import Any

import structlog
from aio_pika.abc import AbstractConnection, AbstractExchange
from aiormq.exceptions import DeliveryError, PublishError
from prometheus_client import CollectorRegistry

from broker.connect import connect
from common.backoff import backoff_delay
from common.loop import reconnecting, sleep_unless
from producer.gaps import Gaps
from producer.metrics import RelayMetrics
from producer.outbox import Outbox, OutboxRow

log = structlog.get_logger("producer.relay")
# How often the relay looks again for outbox ids its cursor passed over (see producer.gaps).
GAP_RECHECK = 0.1


@dataclass
class RelayStats:
    """What the relay has done since it started."""

    published: int = 0
    confirmed: int = 0
    nacked: int = 0
    returned: int = 0
    reconnects: int = 0


class _ConnectionLost(Exception):
    """A publish failed for a reason other than a nack or a return."""


@dataclass
class Relay:
    """Moves outbox rows to the broker: at least once, in outbox order, confirmed."""

    outbox: Outbox
    amqp_url: str
    _: KW_ONLY
    exchange: str
    app_id: str = "order-service"
    window: int = 256  # publishes awaiting their confirm at once
    poll_interval: float = 0.05  # seconds between polls of an empty outbox
    drain_timeout: float = 15.0  # seconds to wait for confirms when stopping
    metrics: RelayMetrics = field(default_factory=lambda: RelayMetrics(CollectorRegistry()))
    stats: RelayStats = field(default_factory=RelayStats, init=False)
    _connection: AbstractConnection | None = field(default=None, init=False)

    def health(self) -> tuple[bool, bool]:
        """(alive, ready): both mean its broker connection is open and publishing."""
        up = self._connection is not None and not self._connection.is_closed
        return up, up

    @property
    def fetch_size(self) -> int:
        """Outbox rows read at once."""
        return max(4 * self.window, 1000)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until stop is set; reconnect with backoff on any broker failure."""
        # Broker gone, connection closed, DB hiccup: the outbox keeps every unconfirmed row,
        # so waiting and starting again from the first one is safe.
        await reconnecting(
            partial(self._session, stop), stop, event="relay.interrupted", on_failure=self._lost
        )

    def _lost(self, exc: BaseException) -> None:
        self.stats.reconnects += 1
        self.metrics.reconnects.inc()

    async def _session(self, stop: asyncio.Event, healthy: Callable[[], None]) -> None:
        connection = self._connection = await connect(self.amqp_url, "relay")
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await channel.get_exchange(self.exchange, ensure=False)
            log.info("relay.connected", exchange=self.exchange, window=self.window)
            healthy()
            await self._pump(exchange, stop)
        finally:
            self._connection = None
            with contextlib.suppress(Exception):
                await connection.close()

    async def _pump(self, exchange: AbstractExchange, stop: asyncio.Event) -> None:
        """Publish from the first unsent row on; return when stop is set."""
        window = _Window(self.window, self)
        cursor, rejections, next_backlog = 0, 0, 0.0
        gaps, next_gap_check = Gaps(), 0.0
        flushing: asyncio.Task[None] | None = None
        try:
            while not stop.is_set():
                if window.lost is not None:
                    raise _ConnectionLost(repr(window.lost))
                if time.monotonic() >= next_backlog:
                    self.metrics.backlog.set(await self.outbox.backlog())
                    next_backlog = time.monotonic() + 2.0
                rows = await self.outbox.fetch_unsent(cursor, self.fetch_size)
                now, late = time.monotonic(), []
                if gaps and now >= next_gap_check:
                    gaps.expire(now)
                    late = await self.outbox.fetch_ids(gaps.pending())
                    gaps.found(r.id for r in late)
                    next_gap_check = now + GAP_RECHECK
                gaps.note(cursor, [r.id for r in rows], now)
                sent = 0
                for row in [*late, *rows]:
                    if not await window.acquire(stop):
                        break
                    window.track(
                        row,
                        exchange.publish(row.message(self.app_id), row.event_type, mandatory=True),
                    )
                    cursor, sent = max(cursor, row.id), sent + 1
                self.stats.published += sent
                self.metrics.published.inc(sent)
                # Marking rows sent runs beside the publishing, one flush at a time, so the
                # window never stalls on the database.
                if flushing is None or flushing.done():
                    if flushing is not None:
                        flushing.result()
                    flushing = asyncio.create_task(self._flush(window.confirmed))
                if window.rejected:
                    # Go back to the first unconfirmed row once the window has settled,
                    # after a backoff that grows while the broker keeps refusing.
                    await window.settle(self.drain_timeout)
                    if flushing is not None:
                        await flushing
                    await self._flush(window.confirmed)
                    rejections += 1
                    window.rejected, cursor = 0, 0
                    gaps.clear()  # reading from the first unsent row finds them anyway
                    await sleep_unless(stop, backoff_delay(rejections, base=0.05, cap=2.0))
                elif not rows and not late:
                    rejections = 0
                    await sleep_unless(stop, self.poll_interval)
        finally:
            await window.settle(self.drain_timeout)
            with contextlib.suppress(Exception):
                if flushing is not None:
                    await flushing
                await self._flush(window.confirmed)
            with contextlib.suppress(Exception):
                self.metrics.backlog.set(await self.outbox.backlog())

    def _count_rejected(self, row: OutboxRow, returned: bool) -> None:
        if returned:
            self.stats.returned += 1
            self.metrics.returned.inc()
        else:
            self.stats.nacked += 1
            self.metrics.nacked.inc()
        how = "returned" if returned else "nacked"
        log.warning(f"relay.{how}", event_id=row.event_id, order_id=row.order_id, seq=row.seq)

    async def _flush(self, confirmed: list[int]) -> None:
        if not confirmed:
            return
        ids = confirmed[:]
        confirmed.clear()
        await self.outbox.mark_sent(ids)
        self.stats.confirmed += len(ids)
        self.metrics.confirmed.inc(len(ids))


class _Window:
    """Publishes in flight: a bounded number, each settled by its confirm."""

    def __init__(self, size: int, relay: Relay) -> None:
        self.slots = asyncio.Semaphore(size)
        self.inflight: set[asyncio.Future[Any]] = set()
        self.confirmed: list[int] = []
        self.rejected = 0
        self.lost: BaseException | None = None
        self.relay = relay

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait for a free slot; False when publishing must stop."""
        await self.slots.acquire()
        if stop.is_set() or self.lost is not None:
            self.slots.release()
            return False
        return True

    def track(self, row: OutboxRow, publish: Coroutine[Any, Any, Any]) -> None:
        """Start a publish and settle it when its confirm (or failure) arrives."""
        fut = asyncio.ensure_future(publish)
        self.inflight.add(fut)
        fut.add_done_callback(partial(self._settled, row, time.monotonic()))

    def _settled(self, row: OutboxRow, started: float, fut: asyncio.Future[Any]) -> None:
        self.slots.release()
        self.inflight.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            self.confirmed.append(row.id)
            self.relay.metrics.confirm_latency.observe(time.monotonic() - started)
        elif isinstance(exc, DeliveryError):  # a nack, or PublishError: a return
            self.rejected += 1
            self.relay._count_rejected(row, returned=isinstance(exc, PublishError))
        else:
            self.lost = exc

    async def settle(self, within: float) -> None:
        """Wait for in-flight publishes; cancel what is still unconfirmed after `within`."""
        if not self.inflight:
            return
        _, pending = await asyncio.wait(set(self.inflight), timeout=within)
        for fut in pending:
            fut.cancel()
        if pending:
            await asyncio.wait(pending)
