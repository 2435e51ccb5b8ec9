"""A delivered message's fields, as consumers read them and republished copies keep them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from broker.frames import Properties


class Received:
    """A delivered message's fields: what consumers read, and what a republished copy keeps.

    Made from the frames of the project's own consumer (`broker.consumer`); never an aio-pika
    message object, which costs a second object and a task per delivery.
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
        """From the parsed frames of `broker.consumer`."""
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
