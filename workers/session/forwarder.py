"""Brings retried events back from a downstream's retry tiers when they are due.

The tier queues hold a copy per retried event, stamped with its due time (`x-retry-at`). They
have no TTL and no dead-letter exchange: the broker's quorum dead-letter worker (3.10) keeps
re-sending to a node that is gone when one node of a cluster is down, and everything behind
it in the tier waits until the node returns. Instead each worker process consumes its
downstream's tiers, waits until each copy is due, publishes it to the downstream's
consistent-hash exchange (the shard its order_id hashes to, as the original publish went)
with publisher confirms, and only then acks it. A copy that a closed channel hands back
is forwarded again by whoever takes it next: the inbox skips the duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

import structlog
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from common.backoff import backoff_delay
from events import headers as h
from events.codec import republished
from topology import names
from workers.applying.policy import now_ms
from workers.metrics import DownstreamMetrics
from workers.session.publisher import ConfirmedPublisher

log = structlog.get_logger("workers")
# Copies a process holds from each tier at once while they wait to be due: with a tier's
# delay D, it forwards at most this many per D seconds (other processes take the rest).
TIER_PREFETCH = 2000


class Forwarder:
    """Consumes one downstream's retry tiers; each copy goes back to its shard when due."""

    def __init__(
        self,
        downstream: str,
        tiers: Iterable[str],
        connection: AbstractConnection,
        metrics: DownstreamMetrics,
        prefetch: int = TIER_PREFETCH,
    ) -> None:
        self.downstream = downstream
        self.queues = [names.retry_queue(downstream, t) for t in tiers]
        self.connection = connection
        self.metrics = metrics
        self.prefetch = prefetch
        self.publisher = ConfirmedPublisher(connection)
        self.target = names.hash_exchange(downstream)
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Consume the tiers until cancelled; a closed channel is opened again."""
        attempt = 0
        try:
            while True:
                try:
                    await self._consume()
                    attempt = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    attempt += 1
                    log.warning(
                        "worker.forwarder_failed", downstream=self.downstream, error=repr(exc)
                    )
                await asyncio.sleep(backoff_delay(attempt, base=0.2, cap=5.0))
        finally:
            for task in list(self.tasks):
                task.cancel()
            await self.publisher.renew()

    async def _consume(self) -> None:
        channel = await self.connection.channel()
        closed = asyncio.Event()
        channel.close_callbacks.add(lambda *_: closed.set())
        try:
            await channel.set_qos(prefetch_count=self.prefetch)
            for name in self.queues:
                queue = await channel.get_queue(name, ensure=False)
                await queue.consume(self._on_message)
            await closed.wait()
        finally:
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            await self.forward(message)
        finally:
            if task is not None:
                self.tasks.discard(task)

    async def forward(self, message: Any) -> None:
        """Wait until the copy is due, publish it to the shards (confirmed, tried again until
        it is), then ack it on its tier."""
        headers = dict(message.headers or {})
        wait = (h.retry_at_of(headers) - now_ms()) / 1000
        if wait > 0:
            await asyncio.sleep(wait)
        out = republished(message, {k: v for k, v in headers.items() if k != h.RETRY_AT})
        attempt = 0
        while True:
            try:
                await self.publisher.publish(self.target, out, "")
                break
            except Exception as exc:
                attempt += 1
                self.metrics.republish_nacked.inc()
                log.warning(
                    "worker.forward_failed",
                    downstream=self.downstream,
                    event_id=message.message_id,
                    attempt=attempt,
                    error=type(exc).__name__,
                )
                await asyncio.sleep(backoff_delay(attempt, base=0.2, cap=5.0))
        try:
            await message.ack()
        except Exception as exc:  # its channel closed: the copy comes back, the inbox skips it
            log.info("worker.forward_unacked", downstream=self.downstream, error=repr(exc))
            return
        self.metrics.forwarded.inc()
