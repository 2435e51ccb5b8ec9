"""The order event contract: models, state machine, AMQP codec and header vocabulary."""

from __future__ import annotations

from events.codec import (
    MalformedEvent,
    MalformedReason,
    decode,
    encode,
)
from events.models import (
    EVENT_ADAPTER,
    SEQ_OF,
    AnyEvent,
    EventType,
    LineItem,
    OrderCreated,
    OrderCreatedEvent,
    OrderPaid,
    OrderPaidEvent,
    OrderShipped,
    OrderShippedEvent,
    PaymentMethod,
)
from events.state import IllegalTransition, OrderState, transition

__all__ = [
    "EVENT_ADAPTER",
    "SEQ_OF",
    "AnyEvent",
    "EventType",
    "IllegalTransition",
    "LineItem",
    "MalformedEvent",
    "MalformedReason",
    "OrderCreated",
    "OrderCreatedEvent",
    "OrderPaid",
    "OrderPaidEvent",
    "OrderShipped",
    "OrderShippedEvent",
    "OrderState",
    "PaymentMethod",
    "decode",
    "encode",
    "transition",
]
