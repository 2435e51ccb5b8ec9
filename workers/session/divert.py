"""A session's confirmed republish of deliveries to their retry tier or to the DLQ."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractConnection
from aiormq.exceptions import ChannelClosed, ChannelInvalidStateError, DeliveryError, PublishError

from broker.received import Received
from common.backoff import backoff_delay
from events import headers as h
from events.codec import republished
from topology import names
from workers.applying.policy import DeadLetter, Retry
from workers.metrics import DownstreamMetrics
from workers.session.publisher import ConfirmedPublisher

log = structlog.get_logger("workers")
# How long a nacked republish is tried again in place before its delivery is handed back.
# A nack means a queue could not take the copy (on a cluster: a quorum queue or the stream
# between leaders, or without a majority). Handing the delivery back at once would bring it
# straight back, and each return counts toward the shard's delivery limit: a node loss then
# dead-lettered healthy events as `delivery-limit` within seconds.
NACKED_RETRY_SECONDS = 60.0
# Tried again (the publisher has moved to a new channel): a nack, a confirm that did not
# come, or the channel closing under the publish.
_TRY_AGAIN = (DeliveryError, TimeoutError, ChannelClosed, ChannelInvalidStateError)


class Divert:
    """Publishes a delivery's copy to a retry tier or the DLQ; returns once it is confirmed."""

    def __init__(
        self, publisher: ConfirmedPublisher, downstream: str, metrics: DownstreamMetrics
    ) -> None:
        self.publisher = publisher
        self.retry = names.retry_exchange(downstream)
        self.dead = names.dead_exchange(downstream)
        self.metrics = metrics

    @classmethod
    def open(
        cls, connection: AbstractConnection, downstream: str, metrics: DownstreamMetrics
    ) -> Divert:
        """On a channel of its own with publisher confirms (and returns raising)."""
        return cls(ConfirmedPublisher(connection), downstream, metrics)

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
        exchange: str,
        message: aio_pika.Message,
        routing_key: str,
        context: dict[str, Any],
    ) -> None:
        """Publish until confirmed: a nack is tried again with backoff for a while, on a new
        channel; a return (unroutable) raises at once."""
        deadline = time.monotonic() + NACKED_RETRY_SECONDS
        attempt = 0
        while True:
            try:
                await self.publisher.publish(exchange, message, routing_key)
                return
            except PublishError:
                raise
            except _TRY_AGAIN:
                attempt += 1
                if time.monotonic() > deadline:
                    raise
                self.metrics.republish_nacked.inc()
                log.warning("worker.republish_nacked", attempt=attempt, **context)
                await asyncio.sleep(backoff_delay(attempt, base=0.2, cap=5.0))
