"""One downstream's AMQP session: connect, a channel per shard, consume, wind down, reconnect.

Two connections a session: the workers' own consume-only connection (`common.consuming`),
which hands each delivery to the lanes as it is parsed, and an aio-pika connection for the
confirmed republishes to retry tiers and the DLQ and for reading queue depths.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from functools import partial

import structlog
from aio_pika.abc import AbstractConnection

from common.amqp import connect
from common.consuming import ConsumerChannel, ConsumerConnection, open_consumer
from common.loop import reconnecting
from topology import names
from workers.acks import STRAGGLER_LIMIT, Acker
from workers.divert import Divert
from workers.handlers import Handler
from workers.lanes import Lanes
from workers.metrics import sample_lag
from workers.runtime import Runtime
from workers.store import DownstreamStore

log = structlog.get_logger("workers")
DRAIN_SECONDS = 15.0


class DownstreamWorker:
    """Consumes every shard of one downstream until stopped; reconnects on failure."""

    def __init__(self, runtime: Runtime, amqp_url: str) -> None:
        self.runtime = runtime
        self.amqp_url = amqp_url
        self.spec = runtime.spec
        self.shards = [names.shard(runtime.name, i) for i in range(self.spec.shards)]

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
        role = f"worker:{self.name}"
        consumer: ConsumerConnection | None = None
        publisher: AbstractConnection | None = None
        shards: list[tuple[ConsumerChannel, str, Acker]] = []
        lanes: Lanes | None = None
        ended = asyncio.Event()
        try:
            publisher = await connect(self.amqp_url, role)
            publisher.close_callbacks.add(lambda *_: ended.set())
            # An unroutable retry or dead letter must fail its publish, never be "confirmed"
            # and then have its original acked (aio-pika's default only logs the return).
            channel = await publisher.channel(publisher_confirms=True, on_return_raises=True)
            channel.close_callbacks.add(lambda *_: ended.set())
            lanes = held = Lanes(
                self.runtime, await Divert.open(channel, self.name, self.runtime.metrics)
            )
            self.runtime.metrics.in_flight.set_function(lambda: held.holding)
            consumer = await open_consumer(self.amqp_url, role)
            consumer.closed.add_done_callback(lambda _: ended.set())
            for shard in self.shards:
                shards.append(await self._consume(consumer, shard, held, ended))
            healthy()
            sampler = asyncio.create_task(
                sample_lag(
                    channel,
                    self.shards,
                    lambda: held.holding,
                    self.runtime.metrics,
                    self.spec.scale_out_lag,
                )
            )
            log.info(
                "worker.consuming",
                downstream=self.name,
                shards=self.spec.shards,
                prefetch=self.spec.prefetch,
                concurrency=self.spec.concurrency,
            )
            await _first(stop, ended)
            sampler.cancel()
            if ended.is_set() and not stop.is_set():
                raise ConnectionError("broker connection or channel closed")
        finally:
            await self._wind_down(shards, lanes)
            for connection in (consumer, publisher):
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()
            self.runtime.cache.clear()

    async def _consume(
        self, consumer: ConsumerConnection, shard: str, lanes: Lanes, ended: asyncio.Event
    ) -> tuple[ConsumerChannel, str, Acker]:
        """A channel of its own for one shard, with the file's prefetch."""
        channel = await consumer.channel()
        channel.closed.add_done_callback(lambda _: ended.set())
        await channel.qos(self.spec.prefetch)
        # Completions far past a slow delivery are acked one by one once they would hold half
        # the prefetch window.
        acker = Acker(channel, straggler_limit=max(STRAGGLER_LIMIT, self.spec.prefetch // 2))
        tag = await channel.consume(shard, partial(lanes.on_message, shard, acker))
        return channel, tag, acker

    async def _wind_down(
        self, shards: list[tuple[ConsumerChannel, str, Acker]], lanes: Lanes | None
    ) -> None:
        """Stop receiving, let in-flight lanes finish, settle; the rest goes back to the queue."""
        for channel, tag, _ in shards:
            with contextlib.suppress(Exception):
                await channel.cancel(tag)
        if lanes is not None:
            await lanes.wind_down(DRAIN_SECONDS)
        for _, _, acker in shards:
            acker.close()


async def _first(*events: asyncio.Event) -> None:
    """Return as soon as any of the events is set."""
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
