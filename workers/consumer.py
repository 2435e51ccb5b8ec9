"""One downstream's AMQP session: connect, a channel per shard, consume, wind down, reconnect."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from functools import partial

import structlog
from aio_pika.abc import AbstractConnection
from aiormq.abc import AbstractChannel as RawChannel

from common.amqp import connect
from common.loop import reconnecting
from topology import names
from workers.acks import Acker
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
        connection = await connect(self.amqp_url, f"worker:{self.name}")
        ended = asyncio.Event()
        connection.close_callbacks.add(lambda *_: ended.set())
        consumers: list[tuple[RawChannel, str, Acker]] = []
        lanes: Lanes | None = None
        try:
            # An unroutable retry or dead letter must fail its publish, never be "confirmed"
            # and then have its original acked (aio-pika's default only logs the return).
            publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
            publisher.close_callbacks.add(lambda *_: ended.set())
            divert = await Divert.open(publisher, self.name, self.runtime.metrics)
            lanes = held = Lanes(self.runtime, divert)
            for shard in self.shards:
                consumers.append(await self._consume(connection, shard, held, ended))
            healthy()
            sampler = asyncio.create_task(
                sample_lag(
                    publisher,
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
            await self._wind_down(consumers, lanes)
            with contextlib.suppress(Exception):
                await connection.close()
            self.runtime.cache.clear()

    async def _consume(
        self, connection: AbstractConnection, shard: str, lanes: Lanes, ended: asyncio.Event
    ) -> tuple[RawChannel, str, Acker]:
        """A channel of its own for one shard, with the file's prefetch."""
        channel = await connection.channel()
        channel.close_callbacks.add(lambda *_: ended.set())
        # Consumed at the aiormq level: aio-pika would add a message object and a second
        # task per delivery, a third of a worker's CPU at full speed.
        raw = await channel.get_underlay_channel()
        await raw.basic_qos(prefetch_count=self.spec.prefetch)
        acker = Acker(raw)
        ok = await raw.basic_consume(shard, partial(lanes.on_message, shard, acker), no_ack=False)
        return raw, str(ok.consumer_tag), acker

    async def _wind_down(
        self, consumers: list[tuple[RawChannel, str, Acker]], lanes: Lanes | None
    ) -> None:
        """Stop receiving, let in-flight lanes finish, settle; the rest goes back to the queue."""
        for raw, tag, _ in consumers:
            with contextlib.suppress(Exception):
                await raw.basic_cancel(tag)
        if lanes is not None:
            await lanes.wind_down(DRAIN_SECONDS)
        for _, _, acker in consumers:
            await acker.close()


async def _first(*events: asyncio.Event) -> None:
    """Return as soon as any of the events is set."""
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
