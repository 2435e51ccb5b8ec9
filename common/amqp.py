"""AMQP plumbing every component shares: connecting, exact queue depth, received frames."""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self, TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import AMQPError, ChannelNotFoundEntity
from aiormq.abc import DeliveredMessage
from pamqp.common import FieldTable

from common.settings import addresses

if TYPE_CHECKING:
    from common.frames import Properties

CONNECT_TIMEOUT = 10.0


def connection_name(role: str) -> str:
    """`<role>:<pid>`: what the management UI and operators see of a connection."""
    return f"{role}:{os.getpid()}"


async def connect(amqp_url: str, role: str) -> AbstractConnection:
    """Open an aio-pika connection named after its role and process, to the first node of
    `amqp_url` (a comma-separated list for a cluster) that answers."""
    properties: FieldTable = {"connection_name": connection_name(role)}

    async def attempt(url: str) -> AbstractConnection:
        return await aio_pika.connect(url, timeout=CONNECT_TIMEOUT, client_properties=properties)

    return await first_answering(amqp_url, attempt)


T = TypeVar("T")
_turn = itertools.count(os.getpid())  # where the next attempt starts in a list of nodes


async def first_answering(urls: str, attempt: Callable[[str], Awaitable[T]]) -> T:
    """`attempt` on each node of a comma-separated list in turn, from a rotating start (so a
    fleet spreads over the nodes); the first that succeeds, or the last failure."""
    nodes = addresses(urls)
    start = next(_turn) % len(nodes)
    error: BaseException | None = None
    for url in nodes[start:] + nodes[:start]:
        try:
            return await attempt(url)
        except (OSError, AMQPError, TimeoutError, ConnectionError) as exc:
            error = exc
    assert error is not None
    raise error


async def queue_depth(channel: AbstractChannel, queue: str) -> int:
    """Ready messages in a queue, exact (a passive declare; the management API lags)."""
    return (await queue_counts(channel, queue))[0]


async def queue_counts(channel: AbstractChannel, queue: str) -> tuple[int, int]:
    """A queue's ready messages and consumers, exact (a passive declare)."""
    declared = (await channel.declare_queue(queue, passive=True)).declaration_result
    return int(declared.message_count or 0), int(declared.consumer_count or 0)


async def depths(connection: AbstractConnection, queues: Iterable[str]) -> dict[str, int | None]:
    """Ready messages of each queue (None: it does not exist), on channels of their own.

    A passive declare of a missing queue closes its channel: the next one gets a new channel,
    and no channel anyone else uses is lost to it.
    """
    out: dict[str, int | None] = {}
    channel: AbstractChannel | None = None
    try:
        for queue in queues:
            if channel is None or channel.is_closed:
                channel = await connection.channel()
            try:
                out[queue] = await queue_depth(channel, queue)
            except ChannelNotFoundEntity:
                out[queue] = None
    finally:
        if channel is not None and not channel.is_closed:
            await channel.close()
    return out


class Received:
    """A delivered message's fields: what consumers read, and what a republished copy keeps.

    Made from the frames of the workers' own consumer (`common.consuming`) or of aiormq's
    (`of_frame`); never an aio-pika message object, which costs a second object and a task
    per delivery.
    """

    __slots__ = (
        "app_id",
        "body",
        "content_type",
        "delivery_tag",
        "headers",
        "message_id",
        "redelivered",
        "routing_key",
        "timestamp",
        "type",
    )

    def __init__(
        self,
        body: bytes,
        headers: dict[str, Any] | None,
        message_id: str | None,
        type: str | None,
        content_type: str | None,
        timestamp: datetime | None,
        app_id: str | None,
        delivery_tag: int,
        redelivered: bool,
        routing_key: str | None,
    ) -> None:
        self.body = body
        self.headers: dict[str, Any] = headers or {}
        self.message_id = message_id
        self.type = type
        self.content_type = content_type
        self.timestamp = timestamp
        self.app_id = app_id
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.routing_key = routing_key

    @classmethod
    def of(
        cls,
        body: bytes,
        props: Properties,
        delivery_tag: int,
        redelivered: bool,
        routing_key: str | None,
    ) -> Self:
        """From the parsed frames of `common.consuming`."""
        return cls(
            body,
            props.headers,
            props.message_id,
            props.type,
            props.content_type,
            props.timestamp,
            props.app_id,
            delivery_tag,
            redelivered,
            routing_key,
        )

    @classmethod
    def of_frame(cls, raw: DeliveredMessage) -> Self:
        """From a message aiormq delivered."""
        props = raw.header.properties
        delivery = raw.delivery
        return cls(
            raw.body,
            props.headers,
            props.message_id,
            props.message_type,
            props.content_type,
            props.timestamp,
            props.app_id,
            getattr(delivery, "delivery_tag", 0) or 0,
            bool(getattr(delivery, "redelivered", False)),
            raw.routing_key,
        )
