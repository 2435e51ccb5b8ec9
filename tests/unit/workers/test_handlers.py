"""Handler rules that need no database."""

from __future__ import annotations

from decimal import Decimal

import pytest

from events import (
    LineItem,
    OrderCreated,
    OrderCreatedEvent,
    OrderPaid,
    OrderPaidEvent,
    PaymentMethod,
)
from topology.spec import DownstreamSpec
from workers.errors import NonRetryableError, TransientError
from workers.handlers import HANDLERS
from workers.handlers.fraud_audit import flag_of


def _created(sku: str, price: str = "10.00") -> OrderCreatedEvent:
    item = LineItem(sku=sku, qty=1, price=Decimal(price))
    return OrderCreatedEvent(
        order_id="o-1",
        seq=1,
        payload=OrderCreated(customer_id="c", items=[item], total=item.price, currency="EUR"),
    )


def test_the_five_downstreams_have_handlers() -> None:
    assert set(HANDLERS) == {"inventory", "loyalty", "recommendations", "warehouse", "fraud_audit"}


async def test_simulated_faults_follow_the_sku_markers() -> None:
    handler = HANDLERS["inventory"](DownstreamSpec())
    with pytest.raises(NonRetryableError):
        await handler.check(_created("POISON-A"), 0)
    for attempts in (0, 1):
        with pytest.raises(TransientError):
            await handler.check(_created("FLAKY2-A"), attempts)
    await handler.check(_created("FLAKY2-A"), 2)
    await handler.check(_created("A"), 0)


def test_batched_downstreams_take_their_time_per_batch() -> None:
    spec = DownstreamSpec.model_validate(
        {"handler_time": "200ms", "batch": {"size": 100, "linger": "50ms"}}
    )
    handler = HANDLERS["warehouse"](spec)
    assert (handler.event_time, handler.batch_time) == (0.0, 0.2)
    per_event = HANDLERS["fraud_audit"](DownstreamSpec.model_validate({"handler_time": "20ms"}))
    assert (per_event.event_time, per_event.batch_time) == (0.02, 0.0)


def test_fraud_rules() -> None:
    assert flag_of(_created("A", "1500.00")) == "large-order"
    assert flag_of(_created("A", "999.99")) is None
    paid = OrderPaidEvent(
        order_id="o",
        seq=2,
        payload=OrderPaid(amount=Decimal("600"), method=PaymentMethod.GIFT_CARD),
    )
    assert flag_of(paid) == "high-value-gift-card"
