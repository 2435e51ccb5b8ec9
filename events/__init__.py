"""The order event contract: models, state machine and AMQP codec."""

from __future__ import annotations

from events.codec import (
    HEADER_ATTEMPTS,
    HEADER_ORDER_ID,
    HEADER_SEQ,
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
from events.state import IllegalTransition, OrderState, next_seq, transition

__all__ = [
    "EVENT_ADAPTER",
    "HEADER_ATTEMPTS",
    "HEADER_ORDER_ID",
    "HEADER_SEQ",
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
    "next_seq",
    "transition",
]
