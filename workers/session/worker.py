"""One downstream's worker: sessions of its share of the shards, one after another.

A session is a pair of connections (`connections`), the lanes its deliveries run in, and the
shards it holds (`shards`). It lasts until the worker stops or something it stands on fails;
a failed session is followed by a new one after a backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

import structlog

from common.loop import reconnecting
from topology import names
from topology.spec import DownstreamSpec, Semantics
from workers.api import Handler
from workers.applying.guard import OrderingGuard, Waited
from workers.applying.policy import now_ms
from workers.applying.progress import ProgressCache
from workers.metrics import DownstreamMetrics, sample_lag
from workers.ownership.coordinator import ROUND_SECONDS, Coordinator
from workers.session.connections import Connections
from workers.session.divert import Divert
from workers.session.forwarder import Forwarder
from workers.session.lanes import Lanes
from workers.session.shards import HeldShards
from workers.store.database import DownstreamStore

log = structlog.get_logger("workers")
DISCOVER_EVERY = 1  # rounds between looks at the broker for shards created or deleted
SWEEP_SECONDS = 1.0  # between looks at the store for held events whose wait is over
# A held event not handled this long after it was held is taken by any process (its shard's
# owner may be gone): the inbox key keeps it applied once if two race.
STALE_MS = 15_000


class DownstreamWorker:
    """Consumes its share of one downstream's shards until stopped; reconnects on failure."""

    def __init__(
        self,
        name: str,
        spec: DownstreamSpec,
        amqp_url: str,
        *,
        store: DownstreamStore,
        handler: Handler,
        guard: OrderingGuard,
        cache: ProgressCache,
        metrics: DownstreamMetrics,
    ) -> None:
        self.name = name
        self.spec = spec
        self.amqp_url = amqp_url
        self.store = store
        self.handler = handler
        self.guard = guard
        self.cache = cache
        self.metrics = metrics
        self.role = f"worker:{name}"
        self.coordinator = Coordinator(store, self.role)
        self.slots = asyncio.Semaphore(spec.concurrency)  # orders handled at once
        self.shard_count = spec.shards  # what the broker has, found at run time
        self.connections: Connections | None = None  # the live session's, for health probes
        self.rounds = 0  # coordination rounds of the live session

    def health(self) -> tuple[bool, bool]:
        """(alive: connected to the broker, ready: has consumed the shards it owns since)."""
        connections = self.connections
        alive = connections is not None and connections.connected
        return alive, alive and self.rounds > 0

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
        await self.guard.close()

    async def _session(self, stop: asyncio.Event, healthy: Callable[[], None]) -> None:
        connections = self.connections = Connections(self.amqp_url, self.role, self.name)
        self.rounds = 0
        held: HeldShards | None = None
        try:
            await connections.open()
            assert connections.publisher is not None
            divert = Divert.open(connections.publisher, self.name, self.metrics)
            lanes = Lanes(
                self.name,
                self.guard,
                divert,
                cache=self.cache,
                slots=self.slots,
                metrics=self.metrics,
                ack_first=self.spec.semantics is Semantics.AT_MOST_ONCE,
            )
            held = HeldShards(
                self.name,
                connections,
                lanes,
                self.coordinator,
                self.cache,
                count=self.shard_count,
                prefetch=self.spec.prefetch,
                on_acked=self.metrics.acked.inc,
            )
            self.metrics.in_flight.set_function(lambda: lanes.holding)
            self.metrics.shards_owned.set_function(lambda: len(held.active) if held else 0)
            healthy()
            log.info(
                "worker.connected",
                downstream=self.name,
                member=self.coordinator.member,
                prefetch=self.spec.prefetch,
                concurrency=self.spec.concurrency,
            )
            await self._coordinate(stop, connections, held, lanes)
        finally:
            self.connections = None
            connections.closed = True
            if held is not None:
                self.shard_count = held.count
                await held.close()
            await connections.close()
            self.cache.clear()
            self.guard.forget_held()

    async def _coordinate(
        self, stop: asyncio.Event, connections: Connections, held: HeldShards, lanes: Lanes
    ) -> None:
        """Every round: renew, rebalance, follow the broker's shards; until stopped or failed."""
        assert connections.publisher is not None
        sampler = asyncio.create_task(
            sample_lag(
                connections.publisher,
                lambda: held.queues,
                lambda: lanes.holding,
                self.metrics,
                self.spec.scale_out_lag,
            )
        )
        sweeper = asyncio.create_task(self._sweep(held, lanes))
        forwarder = Forwarder(self.name, self.spec.retry.tiers, connections.publisher, self.metrics)
        forwarding = asyncio.create_task(forwarder.run())
        try:
            rounds = 0
            while not (stop.is_set() or connections.ended.is_set()):
                if rounds % DISCOVER_EVERY == 0:
                    await held.discover()
                    self.shard_count = held.count
                await held.round()
                rounds += 1
                self.rounds = rounds
                await _first(stop, connections.ended, within=ROUND_SECONDS)
        finally:
            sampler.cancel()
            sweeper.cancel()
            forwarding.cancel()
            await asyncio.gather(sweeper, forwarding, return_exceptions=True)
        if connections.ended.is_set() and not stop.is_set():
            raise ConnectionError("broker connection or channel closed")

    async def _sweep(self, held: HeldShards, lanes: Lanes) -> None:
        """Every second: run the held events whose wait is over (their predecessor applied by
        another process, their order parked, or the bound passed) in their orders' lanes."""
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                now = now_ms()
                shards = [names.shard(self.name, i) for i in held.active]
                for row in await self.store.due_waiting(now, shards, now - STALE_MS):
                    lanes.release(Waited.of(row))
                self.metrics.waiting.set(await self.store.count_waiting())
            except Exception as exc:
                log.warning("worker.sweep_failed", downstream=self.name, error=repr(exc))


async def _first(*events: asyncio.Event, within: float) -> None:
    """Return as soon as any of the events is set, or after `within` seconds."""
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
