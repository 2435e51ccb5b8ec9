"""A session's confirmed republish of deliveries to their retry tier or to the DLQ."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aiormq.exceptions import ChannelClosed, ChannelInvalidStateError, DeliveryError, PublishError

from broker.received import Received
from common.backoff import backoff_delay
from events import headers as h
from events.codec import republished
from topology import names
from workers.applying.policy import DeadLetter, Retry
from workers.metrics import DownstreamMetrics

log = structlog.get_logger("workers")
# How long a nacked republish is tried again in place before its delivery is handed back.
# A nack means a queue could not take the copy (on a cluster: a quorum queue or the stream
# between leaders, or without a majority). Handing the delivery back at once would bring it
# straight back, and each return counts toward the shard's delivery limit: a node loss then
# dead-lettered healthy events as `delivery-limit` within seconds.
NACKED_RETRY_SECONDS = 60.0
# A nack or a closed channel is tried again on this channel's successor: 3.10 keeps a
# channel's quorum queue client aimed at a leader that is gone (a node killed and back), so
# the same channel would be nacked for as long as it lives.
_TRY_AGAIN = (DeliveryError, ChannelClosed, ChannelInvalidStateError)
Reopen = Callable[[], Awaitable[tuple[AbstractExchange, AbstractExchange]]]


class Divert:
    """Publishes a delivery's copy to a retry tier or the DLQ; returns once it is confirmed."""

    def __init__(
        self,
        retry: AbstractExchange,
        dead: AbstractExchange,
        metrics: DownstreamMetrics,
        reopen: Reopen | None = None,
    ) -> None:
        self.retry = retry
        self.dead = dead
        self.metrics = metrics
        self.reopen = reopen  # a new channel's (retry, dead) exchanges
        self._renewing = asyncio.Lock()

    @classmethod
    async def open(
        cls, connection: AbstractConnection, downstream: str, metrics: DownstreamMetrics
    ) -> Divert:
        """On a channel of its own with publisher confirms (and returns raising), replaced
        after a nack."""
        current: list[AbstractChannel] = []

        async def reopen() -> tuple[AbstractExchange, AbstractExchange]:
            for old in current:
                if not old.is_closed:
                    with contextlib.suppress(Exception):
                        await old.close()
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            current[:] = [channel]
            retry = await channel.get_exchange(names.retry_exchange(downstream), ensure=False)
            dead = await channel.get_exchange(names.dead_exchange(downstream), ensure=False)
            return retry, dead

        retry, dead = await reopen()
        return cls(retry, dead, metrics, reopen)

    async def move(
        self, message: Received, decision: Retry | DeadLetter, context: dict[str, Any]
    ) -> None:
        """Republish, confirmed: raises when the broker nacks or cannot route the copy."""
        out = republished(message, decision.headers)
        context = {**context, "attempts": decision.headers.get(h.ATTEMPTS)}
        if isinstance(decision, Retry):
            await self._confirmed(self.retry, out, decision.tier, context)
            self.metrics.retried[decision.tier].inc()
            deferrals = decision.headers.get(h.DEFERRALS)
            log.info("worker.retry", tier=decision.tier, deferrals=deferrals, **context)
            return
        await self._confirmed(self.dead, out, "", context)
        self.metrics.dead[decision.reason].inc()
        log.warning(
            "worker.dead_lettered",
            reason=decision.reason.value,
            error=decision.headers.get(h.ERROR_MESSAGE),
            **context,
        )

    async def _confirmed(
        self,
        exchange: AbstractExchange,
        message: aio_pika.Message,
        routing_key: str,
        context: dict[str, Any],
    ) -> None:
        """Publish until confirmed: a nack is tried again with backoff for a while; a return
        (unroutable) or a closed channel raises at once."""
        deadline = time.monotonic() + NACKED_RETRY_SECONDS
        attempt = 0
        while True:
            try:
                await exchange.publish(message, routing_key=routing_key)
                return
            except PublishError:
                raise
            except _TRY_AGAIN:
                attempt += 1
                if time.monotonic() > deadline:
                    raise
                self.metrics.republish_nacked.inc()
                log.warning("worker.republish_nacked", attempt=attempt, **context)
                dead = exchange is self.dead
                await self._renew(exchange)
                exchange = self.dead if dead else self.retry
                await asyncio.sleep(backoff_delay(attempt, base=0.2, cap=5.0))

    async def _renew(self, failed: AbstractExchange) -> None:
        """Move to a new channel, unless another publish already has since `failed`."""
        if self.reopen is None:
            return
        async with self._renewing:
            if failed is self.retry or failed is self.dead:
                self.retry, self.dead = await self.reopen()
