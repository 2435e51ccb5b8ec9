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
from simulation.handlers import Simulated
from topology.spec import DEFAULT_TOPOLOGY_FILE, DownstreamSpec, load_spec
from workers.api import Handler, HandlerNotFound, NonRetryableError, TransientError, handler_class
from workers.handlers.fraud_audit import FraudAuditHandler, flag_of
from workers.handlers.inventory import InventoryHandler
from workers.handlers.warehouse import WarehouseHandler


def _created(sku: str, price: str = "10.00") -> OrderCreatedEvent:
    item = LineItem(sku=sku, qty=1, price=Decimal(price))
    return OrderCreatedEvent(
        order_id="o-1",
        seq=1,
        payload=OrderCreated(customer_id="c", items=[item], total=item.price, currency="EUR"),
    )


def test_the_file_names_each_shipped_handler_and_each_loads() -> None:
    spec = load_spec(DEFAULT_TOPOLOGY_FILE)
    loaded = {d: handler_class(d, ds.handler) for d, ds in spec.downstreams.items()}
    assert {d: h.name for d, h in loaded.items() if h} == {d: d for d in spec.downstreams}
    assert all(h is not None and issubclass(h, Handler) for h in loaded.values())


def test_a_handler_that_cannot_be_loaded_is_named_with_the_reason() -> None:
    with pytest.raises(HandlerNotFound, match=r"cannot load handler 'nowhere\.at_all:X'"):
        handler_class("shipping", "nowhere.at_all:X")
    with pytest.raises(HandlerNotFound, match="is not a subclass of Handler"):
        handler_class("shipping", "decimal:Decimal")
    assert handler_class("no_such_downstream", None) is None  # no entry point either


async def test_without_the_simulation_a_sku_marker_is_an_ordinary_sku() -> None:
    handler = InventoryHandler(DownstreamSpec())
    await handler.check(_created("POISON-A"), 0)
    await handler.check(_created("FLAKY2-A"), 0)


async def test_the_simulation_fails_as_the_sku_markers_say() -> None:
    spec = DownstreamSpec()
    handler = Simulated(InventoryHandler(spec), spec)
    with pytest.raises(NonRetryableError):
        await handler.check(_created("POISON-A"), 0)
    for attempts in (0, 1):
        with pytest.raises(TransientError):
            await handler.check(_created("FLAKY2-A"), attempts)
    await handler.check(_created("FLAKY2-A"), 2)
    await handler.check(_created("A"), 0)
    assert handler.stock is handler.inner.stock  # the real handler's tables


def test_batched_downstreams_take_their_simulated_time_per_batch() -> None:
    spec = DownstreamSpec.model_validate(
        {"handler_time": "200ms", "batch": {"size": 100, "linger": "50ms"}}
    )
    handler = Simulated(WarehouseHandler(spec), spec)
    assert (handler.event_time, handler.batch_time) == (0.0, 0.2)
    per_spec = DownstreamSpec.model_validate({"handler_time": "20ms"})
    per_event = Simulated(FraudAuditHandler(per_spec), per_spec)
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
