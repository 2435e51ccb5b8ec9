"""One downstream's AMQP session: connect, consume the shards this process holds, reconnect.

Two connections a session: the workers' own consume-only connection (`common.consuming`),
which hands each delivery to the lanes as it is parsed, and an aio-pika connection for the
confirmed republishes to retry tiers and the DLQ and for reading queue depths.

Which shards this process consumes is decided with the downstream's other processes through
leases in the shared store (`workers.coordinator`): every second it renews what it holds,
gives up what is beyond its share (after winding that shard down: consumer cancelled, what
it holds finished and acked), and takes free shards up to its share. New shards are found on
the broker as they are created; a deleted one is let go.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection

from common.amqp import connect, depths
from common.consuming import AMQPClosed, ConsumerChannel, ConsumerConnection, open_consumer
from common.loop import reconnecting
from topology import names
from workers.acks import STRAGGLER_LIMIT, Acker
from workers.coordinator import ROUND_SECONDS, Coordinator
from workers.divert import Divert
from workers.handlers import Handler
from workers.lanes import Lanes
from workers.metrics import sample_lag
from workers.runtime import Runtime
from workers.store import DownstreamStore

log = structlog.get_logger("workers")
DRAIN_SECONDS = 15.0
DISCOVER_EVERY = 1  # rounds between looks at the broker for shards created or deleted


@dataclass
class _Shard:
    """A shard this process consumes: its channel, consumer tag and acker."""

    channel: ConsumerChannel
    tag: str
    acker: Acker


class DownstreamWorker:
    """Consumes its share of one downstream's shards until stopped; reconnects on failure."""

    def __init__(self, runtime: Runtime, amqp_url: str) -> None:
        self.runtime = runtime
        self.amqp_url = amqp_url
        self.spec = runtime.spec
        self.coordinator = Coordinator(runtime.store, f"worker:{runtime.name}")
        self.shard_count = self.spec.shards  # what the broker has, found at run time
        self.session: _Session | None = None  # the live one, for health probes

    def health(self) -> tuple[bool, bool]:
        """(alive: connected to the broker, ready: has consumed the shards it owns since)."""
        session = self.session
        alive = session is not None and session.connected
        return alive, alive and session is not None and session.rounds > 0

    @property
    def name(self) -> str:
        """The downstream's name."""
        return self.runtime.name

    @property
    def store(self) -> DownstreamStore:
        """The downstream's store."""
        return self.runtime.store

    @property
    def handler(self) -> Handler:
        """The downstream's handler."""
        return self.runtime.handler

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until stop is set; a lost connection starts a new session after backoff."""
        await reconnecting(
            partial(self._session, stop),
            stop,
            event="worker.session_failed",
            base=0.2,
            cap=10.0,
            downstream=self.name,
        )
        await self.runtime.close()

    async def _session(self, stop: asyncio.Event, healthy: Callable[[], None]) -> None:
        session = self.session = _Session(self)
        try:
            await session.open()
            healthy()
            log.info(
                "worker.connected",
                downstream=self.name,
                member=self.coordinator.member,
                prefetch=self.spec.prefetch,
                concurrency=self.spec.concurrency,
            )
            await session.coordinate(stop)
        finally:
            self.session = None
            await session.close()
            self.runtime.cache.clear()


class _Session:
    """What lives as long as one pair of connections: channels, lanes, the shards held."""

    def __init__(self, worker: DownstreamWorker) -> None:
        self.worker = worker
        self.runtime = worker.runtime
        self.coordinator = worker.coordinator
        self.role = f"worker:{worker.name}"
        self.publisher: AbstractConnection | None = None
        self.channel: AbstractChannel | None = None
        self.consumer: ConsumerConnection | None = None
        self.lanes: Lanes | None = None
        self.active: dict[int, _Shard] = {}
        self.stopping: dict[int, asyncio.Task[None]] = {}
        self.closing: set[ConsumerChannel] = set()  # closed by us: not a failure
        self.ended = asyncio.Event()  # a connection or channel failed
        self.closed = False  # close() has begun: connections closing are no failure
        self.rounds = 0  # coordination rounds done: each starts what this process owns

    @property
    def connected(self) -> bool:
        """Both connections are open and nothing has failed."""
        return (
            not (self.closed or self.ended.is_set())
            and self.publisher is not None
            and not self.publisher.is_closed
            and self.consumer is not None
            and self.consumer.is_open
        )

    async def open(self) -> None:
        """Connect both ways; nothing is consumed yet."""
        self.publisher = await connect(self.worker.amqp_url, self.role)
        self.publisher.close_callbacks.add(partial(self._lost, "publishing connection"))
        # An unroutable retry or dead letter must fail its publish, never be "confirmed"
        # and then have its original acked (aio-pika's default only logs the return).
        self.channel = await self.publisher.channel(publisher_confirms=True, on_return_raises=True)
        self.channel.close_callbacks.add(partial(self._lost, "publishing channel"))
        divert = await Divert.open(self.channel, self.worker.name, self.runtime.metrics)
        self.lanes = lanes = Lanes(self.runtime, divert)
        self.runtime.metrics.in_flight.set_function(lambda: lanes.holding)
        self.runtime.metrics.shards_owned.set_function(lambda: len(self.active))
        self.consumer = await open_consumer(self.worker.amqp_url, self.role)
        self.consumer.closed.add_done_callback(partial(self._lost, "consuming connection"))

    async def coordinate(self, stop: asyncio.Event) -> None:
        """Every round: renew, rebalance, follow the broker's shards; until stopped or failed."""
        assert self.publisher is not None
        shards = [names.shard(self.worker.name, i) for i in range(self.worker.shard_count)]
        sampler = asyncio.create_task(
            sample_lag(
                self.publisher,
                shards,
                lambda: self.lanes.holding if self.lanes else 0,
                self.runtime.metrics,
                self.worker.spec.scale_out_lag,
            )
        )
        try:
            rounds = 0
            while not (stop.is_set() or self.ended.is_set()):
                if rounds % DISCOVER_EVERY == 0:
                    await self._discover(shards)
                await self._round()
                rounds += 1
                self.rounds = rounds
                await _first(stop, self.ended, within=ROUND_SECONDS)
        finally:
            sampler.cancel()
        if self.ended.is_set() and not stop.is_set():
            raise ConnectionError("broker connection or channel closed")

    async def _round(self) -> None:
        count = self.worker.shard_count
        held = set(self.active) | set(self.stopping)
        outcome = await self.coordinator.round(range(count), held)
        for shard in outcome.lost:  # another process holds it now: stop at once
            self._stop(shard, release=False)
        for shard in outcome.moves.release:
            self._stop(shard, release=True)
        for shard in set(self.active) - set(range(count)):  # deleted on the broker
            self._stop(shard, release=True)
        for shard in outcome.moves.acquire:
            if shard in self.stopping or not await self.coordinator.acquire(shard):
                continue
            # What this process cached about the shard's orders may be stale: another
            # process may have applied their events since.
            self.runtime.cache.clear()
            await self._start(shard)

    async def _discover(self, shards: list[str]) -> None:
        """Follow the shards the broker has (created by `apply` growing the downstream, or
        deleted after draining when it shrinks): always `<d>.0` … `<d>.<n-1>`."""
        n = self.worker.shard_count
        while await self._exists(n):
            n += 1
        while n > 1 and not await self._exists(n - 1):
            n -= 1
        if n != self.worker.shard_count:
            log.info(
                "worker.shards_changed",
                downstream=self.worker.name,
                was=self.worker.shard_count,
                now=n,
            )
            self.worker.shard_count = n
            self.runtime.cache.clear()  # orders moved between shards: trust only the store
        shards[:] = [names.shard(self.worker.name, i) for i in range(n)]

    async def _exists(self, index: int) -> bool:
        assert self.publisher is not None
        queue = names.shard(self.worker.name, index)
        return (await depths(self.publisher, [queue]))[queue] is not None

    async def _start(self, index: int) -> None:
        """Consume one shard on a channel of its own, with the file's prefetch."""
        assert self.consumer is not None and self.lanes is not None
        shard = names.shard(self.worker.name, index)
        channel = await self.consumer.channel()
        channel.closed.add_done_callback(partial(self._channel_closed, channel))
        self.closing.add(channel)  # until it consumes: a shard deleted meanwhile is no failure
        await channel.qos(self.worker.spec.prefetch)
        # Completions far past a slow delivery are acked one by one once they would hold
        # half the prefetch window.
        limit = max(STRAGGLER_LIMIT, self.worker.spec.prefetch // 2)
        acker = Acker(channel, straggler_limit=limit, on_acked=self.runtime.metrics.acked.inc)
        try:
            tag = await channel.consume(
                shard,
                partial(self.lanes.on_message, shard, acker),
                on_cancel=lambda _: self._stop(index, release=True),
            )
        except AMQPClosed as exc:
            if exc.code != 404:
                raise
            log.info("worker.shard_gone", downstream=self.worker.name, shard=shard)
            await self.coordinator.release(index)
            self.worker.shard_count = min(self.worker.shard_count, index)
            return
        self.closing.discard(channel)
        if not channel.is_open:  # closed while starting: the session starts over
            self.ended.set()
            return
        self.active[index] = _Shard(channel, tag, acker)
        log.info("worker.shard_started", downstream=self.worker.name, shard=shard)

    def _lost(self, what: str, *args: object) -> None:
        """A connection or the publishing channel closed: the session starts over."""
        if not self.ended.is_set() and not self.closed:
            log.warning(
                "worker.session_lost", downstream=self.worker.name, lost=what, cause=repr(args[-1:])
            )
        self.ended.set()

    def _channel_closed(self, channel: ConsumerChannel, closed: asyncio.Future[object]) -> None:
        if channel not in self.closing:  # the broker closed it: start a new session
            log.warning(
                "worker.channel_closed",
                downstream=self.worker.name,
                channel=channel.number,
                error=repr(closed.result()),
            )
            self.ended.set()

    def _stop(self, index: int, release: bool) -> None:
        """Wind a shard down in the background (the rounds go on renewing meanwhile)."""
        held = self.active.pop(index, None)
        if held is not None and index not in self.stopping:
            task = asyncio.create_task(self._wind_down(index, held, release))
            self.stopping[index] = task
            task.add_done_callback(lambda _: self.stopping.pop(index, None))

    async def _wind_down(self, index: int, held: _Shard, release: bool) -> None:
        """Cancel, let what the shard's lanes hold finish and be acked, close; then let go."""
        assert self.lanes is not None
        shard = names.shard(self.worker.name, index)
        with contextlib.suppress(Exception):
            await held.channel.cancel(held.tag)
        finished = await self.lanes.drain(shard, DRAIN_SECONDS)
        held.acker.close()
        self.closing.add(held.channel)
        with contextlib.suppress(Exception):
            await held.channel.close()
        if release:
            with contextlib.suppress(Exception):
                await self.coordinator.release(index)
        log.info("worker.shard_stopped", downstream=self.worker.name, shard=shard, drained=finished)

    async def close(self) -> None:
        """Wind every shard down, give the leases up, close both connections."""
        self.closed = True
        for index in list(self.active):
            self._stop(index, release=False)
        if self.stopping:
            await asyncio.wait(set(self.stopping.values()))
        if self.lanes is not None:
            await self.lanes.wind_down(DRAIN_SECONDS)
        with contextlib.suppress(Exception):
            # Let the others take over at once rather than when the leases run out.
            await self.coordinator.leave(range(self.worker.shard_count))
        for connection in (self.consumer, self.publisher):
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()


async def _first(*events: asyncio.Event, within: float) -> None:
    """Return as soon as any of the events is set, or after `within` seconds."""
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
