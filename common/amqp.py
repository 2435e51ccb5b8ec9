"""AMQP plumbing every component shares: connecting, exact queue depth, received frames."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage

CONNECT_TIMEOUT = 10.0


async def connect(amqp_url: str, role: str) -> AbstractConnection:
    """Open a connection named `<role>:<pid>` (the management UI and operators see the name)."""
    return await aio_pika.connect(
        amqp_url,
        timeout=CONNECT_TIMEOUT,
        client_properties={"connection_name": f"{role}:{os.getpid()}"},
    )


async def queue_depth(channel: AbstractChannel, queue: str) -> int:
    """Ready messages in a queue, exact (a passive declare; the management API lags)."""
    declared = await channel.declare_queue(queue, passive=True)
    return int(declared.declaration_result.message_count or 0)


class Received:
    """A delivered message's fields, read straight from aiormq's frames.

    Consumers that settle on the raw channel use this instead of aio-pika's message object
    (which costs a second object and a task per delivery). It has what a republished copy
    keeps (`events.codec.republished`).
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

    def __init__(self, raw: DeliveredMessage) -> None:
        props = raw.header.properties
        self.body: bytes = raw.body
        self.headers: dict[str, Any] = props.headers or {}
        self.message_id: str | None = props.message_id
        self.type: str | None = props.message_type
        self.content_type: str | None = props.content_type
        self.timestamp: datetime | None = props.timestamp
        self.app_id: str | None = props.app_id
        delivery = raw.delivery
        self.delivery_tag: int = getattr(delivery, "delivery_tag", 0) or 0
        self.redelivered: bool = bool(getattr(delivery, "redelivered", False))
        self.routing_key: str | None = raw.routing_key
