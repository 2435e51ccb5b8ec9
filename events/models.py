"""The event contract: payloads and the envelope of every order event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    WithJsonSchema,
    model_validator,
)

from events.evolution import CURRENT_VERSION


class EventType(StrEnum):
    """The three events of an order's life, also the AMQP routing keys."""

    CREATED = "order.created"
    PAID = "order.paid"
    SHIPPED = "order.shipped"


# The per-order version each event carries: the ordering guard compares against it.
SEQ_OF: dict[EventType, int] = {EventType.CREATED: 1, EventType.PAID: 2, EventType.SHIPPED: 3}

# Money is written as a decimal string ("24.98"): exact, and one type in every language. Readers
# also take a JSON number.
MONEY_PATTERN = r"^\d{1,12}(\.\d{1,2})?$"
Money = Annotated[
    Decimal,
    Field(ge=0, max_digits=14, decimal_places=2),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": MONEY_PATTERN,
            "description": "An amount of money: a decimal string with at most 2 decimals.",
        },
        mode="serialization",
    ),
]
Text = Annotated[str, Field(min_length=1, max_length=200)]


class _Model(BaseModel):
    # Fields a reader does not know are ignored, as protobuf and Avro readers do: a producer
    # may add optional fields within a schema_version (the bus forwards the body unchanged).
    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        # What a producer writes has every field: defaults are required in the contract.
        json_schema_serialization_defaults_required=True,
    )


class LineItem(_Model):
    """One line of an order."""

    sku: Text
    qty: Annotated[int, Field(gt=0, le=10_000)]
    price: Money


class OrderCreated(_Model):
    """Payload of order.created."""

    customer_id: Text
    items: Annotated[list[LineItem], Field(min_length=1, max_length=500)]
    total: Money
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]

    @model_validator(mode="after")
    def _total_matches_items(self) -> OrderCreated:
        expected = sum((i.price * i.qty for i in self.items), Decimal(0))
        if expected != self.total:
            raise ValueError(f"total {self.total} does not equal the sum of items {expected}")
        return self


class PaymentMethod(StrEnum):
    """How an order was paid."""

    CARD = "card"
    PAYPAL = "paypal"
    BANK_TRANSFER = "bank_transfer"
    GIFT_CARD = "gift_card"


class OrderPaid(_Model):
    """Payload of order.paid."""

    amount: Money
    method: PaymentMethod


class OrderShipped(_Model):
    """Payload of order.shipped."""

    carrier: Text
    tracking_number: Text  # `tracking` in version 1


class _Envelope(_Model):
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    order_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    seq: Annotated[int, Field(ge=1, le=3)]
    occurred_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    schema_version: Literal[2] = CURRENT_VERSION
    event_type: EventType

    @model_validator(mode="after")
    def _seq_matches_type(self) -> _Envelope:
        expected = SEQ_OF[self.event_type]
        if self.seq != expected:
            raise ValueError(
                f"seq {self.seq} does not match {self.event_type}: expected {expected}"
            )
        return self


class OrderCreatedEvent(_Envelope):
    """Envelope of order.created."""

    event_type: Literal[EventType.CREATED] = EventType.CREATED
    payload: OrderCreated


class OrderPaidEvent(_Envelope):
    """Envelope of order.paid."""

    event_type: Literal[EventType.PAID] = EventType.PAID
    payload: OrderPaid


class OrderShippedEvent(_Envelope):
    """Envelope of order.shipped."""

    event_type: Literal[EventType.SHIPPED] = EventType.SHIPPED
    payload: OrderShipped


Event = Annotated[
    OrderCreatedEvent | OrderPaidEvent | OrderShippedEvent, Field(discriminator="event_type")
]
EVENT_ADAPTER: TypeAdapter[OrderCreatedEvent | OrderPaidEvent | OrderShippedEvent] = TypeAdapter(
    Event
)
AnyEvent = OrderCreatedEvent | OrderPaidEvent | OrderShippedEvent
