"""A session's confirmed republish of deliveries to their retry tier or to the DLQ."""

from __future__ import annotations

from typing import Any

import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange

from common.amqp import Received
from events import headers as h
from events.codec import republished
from topology import names
from workers.metrics import DownstreamMetrics
from workers.policy import DeadLetter, Retry

log = structlog.get_logger("workers")


class Divert:
    """Publishes a delivery's copy to a retry tier or the DLQ; returns once it is confirmed."""

    def __init__(
        self, retry: AbstractExchange, dead: AbstractExchange, metrics: DownstreamMetrics
    ) -> None:
        self.retry = retry
        self.dead = dead
        self.metrics = metrics

    @classmethod
    async def open(
        cls, channel: AbstractChannel, downstream: str, metrics: DownstreamMetrics
    ) -> Divert:
        """On a channel with publisher confirms (and returns raising)."""
        retry = await channel.get_exchange(names.retry_exchange(downstream), ensure=False)
        dead = await channel.get_exchange(names.dead_exchange(downstream), ensure=False)
        return cls(retry, dead, metrics)

    async def move(
        self, message: Received, decision: Retry | DeadLetter, context: dict[str, Any]
    ) -> None:
        """Republish, confirmed: raises when the broker nacks or cannot route the copy."""
        out = republished(message, decision.headers)
        context = {**context, "attempts": decision.headers.get(h.ATTEMPTS)}
        if isinstance(decision, Retry):
            await self.retry.publish(out, routing_key=decision.tier)
            self.metrics.retried[decision.tier].inc()
            deferrals = decision.headers.get(h.DEFERRALS)
            log.info("worker.retry", tier=decision.tier, deferrals=deferrals, **context)
            return
        await self.dead.publish(out, routing_key="")
        self.metrics.dead[decision.reason].inc()
        log.warning(
            "worker.dead_lettered",
            reason=decision.reason.value,
            error=decision.headers.get(h.ERROR_MESSAGE),
            **context,
        )
