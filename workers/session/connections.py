"""A session's pair of connections: the workers' own consumer and aio-pika for republishing.

The consumer connection (`broker.consumer`) hands each delivery to the lanes as it is parsed;
the aio-pika connection carries the confirmed republishes to retry tiers and the DLQ and
reads queue depths (its channels are replaced as they fail). Either connection closing ends
the session: `ended` is set and the worker starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial

import structlog
from aio_pika.abc import AbstractConnection

from broker.connect import connect
from broker.consumer import ConsumerConnection, open_consumer

log = structlog.get_logger("workers")


class Connections:
    """Both connections of one session, and whether either has failed."""

    def __init__(self, amqp_url: str, role: str, downstream: str) -> None:
        self.amqp_url = amqp_url
        self.role = role
        self.downstream = downstream
        self.publisher: AbstractConnection | None = None
        self.consumer: ConsumerConnection | None = None
        self.ended = asyncio.Event()  # a connection failed
        self.closed = False  # close() has begun: connections closing are no failure

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
        self.publisher = await connect(self.amqp_url, self.role)
        self.publisher.close_callbacks.add(partial(self.lost, "publishing connection"))
        self.consumer = await open_consumer(self.amqp_url, self.role)
        self.consumer.closed.add_done_callback(partial(self.lost, "consuming connection"))

    def lost(self, what: str, *args: object) -> None:
        """Something the session stands on closed: it starts over."""
        if not self.ended.is_set() and not self.closed:
            log.warning(
                "worker.session_lost", downstream=self.downstream, lost=what, cause=repr(args[-1:])
            )
        self.ended.set()

    async def close(self) -> None:
        """Close both connections (the broker requeues what the consumer held unacked)."""
        self.closed = True
        for connection in (self.consumer, self.publisher):
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()
