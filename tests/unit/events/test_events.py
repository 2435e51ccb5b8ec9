"""The wire contract: models, state machine, encode/decode."""

from __future__ import annotations

import json
from typing import Any

import aio_pika
import pytest

from events import (
    EventType,
    IllegalTransition,
    MalformedEvent,
    MalformedReason,
    OrderState,
    decode,
    encode,
    transition,
)
from tests.support.factories import order_events, raw_of


def test_encode_sets_the_wire_contract() -> None:
    created = order_events("o-1")[0]
    msg = encode(created, app_id="shop")
    assert msg.message_id == str(created.event_id)
    assert msg.type == "order.created"
    assert msg.content_type == "application/json"
    assert msg.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert msg.app_id == "shop"
    assert msg.timestamp is not None and int(msg.timestamp.timestamp()) == int(
        created.occurred_at.timestamp()
    )
    assert msg.headers == {"order_id": "o-1", "seq": 1, "x-attempts": 0}


@pytest.mark.parametrize("index", [0, 1, 2])
def test_round_trip(index: int) -> None:
    event = order_events("o-42")[index]
    assert decode(raw_of(encode(event))) == event


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"body": b"\xff\xfe not utf8"}, MalformedReason.ENCODING),
        ({"body": b"{not json"}, MalformedReason.BAD_JSON),
        ({"body": b'{"event_type": "order.refunded"}'}, MalformedReason.SCHEMA),
        ({"body": b"[1, 2]"}, MalformedReason.SCHEMA),
        ({"headers": {"seq": 1}}, MalformedReason.MISSING_HEADER),
        (
            {"headers": {"order_id": "o-1", "seq": 1, "x-attempts": 0}},
            MalformedReason.HEADER_MISMATCH,
        ),
        ({"headers": {"order_id": "o-7", "seq": "1"}}, MalformedReason.HEADER_MISMATCH),
        ({"message_id": "another-id"}, MalformedReason.HEADER_MISMATCH),
        ({"type": "order.paid"}, MalformedReason.HEADER_MISMATCH),
        ({"content_type": "text/plain"}, MalformedReason.CONTENT_TYPE),
    ],
)
def test_bad_messages_raise_with_reason(change: dict[str, Any], reason: MalformedReason) -> None:
    raw = raw_of(encode(order_events("o-7")[0]), **change)
    with pytest.raises(MalformedEvent) as info:
        decode(raw)
    assert info.value.reason is reason
    assert info.value.detail


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d["payload"].update(total="1.00"), "total"),
        (lambda d: d.update(seq=2), "seq"),
        (lambda d: d["payload"].update(currency="euro"), "payload.currency"),
        (lambda d: d["payload"]["items"][0].update(qty=0), "items.0.qty"),
        (lambda d: d.update(occurred_at="2026-01-01T00:00:00"), "occurred_at"),
        (lambda d: d["payload"].pop("customer_id"), "payload.customer_id"),
        (lambda d: d["payload"].update(customer_id=["c-1"]), "payload.customer_id"),
    ],
)
def test_schema_violations_name_the_field(mutate: Any, where: str) -> None:
    msg = encode(order_events("o-7")[0])
    data = json.loads(msg.body)
    mutate(data)
    with pytest.raises(MalformedEvent) as info:
        decode(raw_of(msg, body=json.dumps(data).encode()))
    assert info.value.reason is MalformedReason.SCHEMA
    assert where in info.value.detail


def test_state_machine_allows_only_the_life_of_an_order() -> None:
    state = None
    for event_type, expected in [
        (EventType.CREATED, OrderState.CREATED),
        (EventType.PAID, OrderState.PAID),
        (EventType.SHIPPED, OrderState.SHIPPED),
    ]:
        state = transition(state, event_type)
        assert state is expected


@pytest.mark.parametrize(
    ("state", "event_type"),
    [
        (None, EventType.PAID),
        (None, EventType.SHIPPED),
        (OrderState.CREATED, EventType.CREATED),
        (OrderState.CREATED, EventType.SHIPPED),
        (OrderState.PAID, EventType.PAID),
        (OrderState.SHIPPED, EventType.SHIPPED),
        (OrderState.SHIPPED, EventType.CREATED),
    ],
)
def test_illegal_transitions_raise(state: OrderState | None, event_type: EventType) -> None:
    with pytest.raises(IllegalTransition, match=event_type.value):
        transition(state, event_type)
