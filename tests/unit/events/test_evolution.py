"""How events evolve: added fields are read, older versions are upcast in one place, and a
newer version is refused as unsupported (with the identity the guard parks it by), not as
malformed."""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from typing import Any

import pytest

from events import MalformedEvent, MalformedReason, decode, encode
from events.evolution import CURRENT_VERSION, UPCASTS, UnsupportedVersion, readable, upcast
from events.models import AnyEvent, OrderCreatedEvent, OrderPaidEvent, OrderShippedEvent
from tests.support.factories import Raw, order_events, raw_of


def _with(event: AnyEvent, change: Callable[[dict[str, Any]], object]) -> Raw:
    """The event's message with its JSON body changed in place by `change`."""
    message = encode(event)
    body = json.loads(message.body)
    change(body)
    return raw_of(message, body=json.dumps(body).encode())


def _as_v1(body: dict[str, Any]) -> None:
    """The body as a version 1 producer wrote it."""
    body["schema_version"] = 1
    if body["event_type"] == "order.shipped":
        body["payload"]["tracking"] = body["payload"].pop("tracking_number")


def test_producers_write_the_current_version_and_the_models_accept_only_it() -> None:
    events = order_events("o-1")
    assert {json.loads(encode(e).body)["schema_version"] for e in events} == {CURRENT_VERSION}
    for model in (OrderCreatedEvent, OrderPaidEvent, OrderShippedEvent):
        annotation = model.model_fields["schema_version"].annotation
        assert typing.get_args(annotation) == (CURRENT_VERSION,)


def test_every_older_version_upcasts_to_the_current_one() -> None:
    assert readable() == sorted({CURRENT_VERSION, *UPCASTS})
    for version in UPCASTS:
        assert version < CURRENT_VERSION
        envelope = upcast({"schema_version": version, "event_type": "order.paid", "payload": {}})
        assert envelope["schema_version"] == CURRENT_VERSION


@pytest.mark.parametrize("version", [1, CURRENT_VERSION])
def test_added_optional_fields_are_read_and_ignored(version: int) -> None:
    for event in order_events("o-1"):

        def add(body: dict[str, Any], event: AnyEvent = event) -> None:
            if version == 1:
                _as_v1(body)
            body["trace_id"] = "abc"  # the envelope
            body["payload"]["gift_wrap"] = {"paper": "red"}  # the payload
            if event.event_type == "order.created":
                body["payload"]["items"][0]["colour"] = "blue"  # a line item

        assert decode(_with(event, add)) == event


def test_a_v1_shipped_event_is_upcast_to_the_current_model() -> None:
    shipped = order_events("o-1")[2]
    assert isinstance(shipped, OrderShippedEvent)
    decoded = decode(_with(shipped, _as_v1))
    assert decoded == shipped
    assert decoded.schema_version == CURRENT_VERSION
    assert decoded.payload.tracking_number == shipped.payload.tracking_number


@pytest.mark.parametrize("version", [1, CURRENT_VERSION])
@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda p: p.pop("carrier"), "payload.carrier"),  # a required field missing
        (lambda p: p.update(carrier=7), "payload.carrier"),  # wrongly typed
        (lambda p: p.update(carrier=""), "payload.carrier"),  # out of its range
    ],
)
def test_missing_or_wrongly_typed_required_fields_are_still_refused(
    version: int, change: Callable[[dict[str, Any]], object], where: str
) -> None:
    def broken(body: dict[str, Any]) -> None:
        if version == 1:
            _as_v1(body)
        change(body["payload"])

    with pytest.raises(MalformedEvent) as info:
        decode(_with(order_events("o-1")[2], broken))
    assert info.value.reason is MalformedReason.SCHEMA
    assert where in info.value.detail
    if version == 1:
        assert info.value.detail.startswith("read as version 1: ")


def test_a_newer_version_is_unsupported_not_malformed() -> None:
    paid = order_events("o-9")[1]
    future = CURRENT_VERSION + 97

    def v99(body: dict[str, Any]) -> None:
        body["schema_version"] = future
        body["payload"] = {"amount": {"value": "10.00", "currency": "EUR"}}  # a new shape

    with pytest.raises(UnsupportedVersion) as info:
        decode(_with(paid, v99))
    assert (info.value.version, info.value.order_id, info.value.seq) == (future, "o-9", 2)
    assert f"schema_version {future}" in str(info.value)
    assert str(CURRENT_VERSION) in str(info.value)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"headers": {"seq": 2}}, MalformedReason.MISSING_HEADER),
        ({"headers": {"order_id": "o-9", "seq": 3}}, MalformedReason.HEADER_MISMATCH),
        ({"headers": {"order_id": "other", "seq": 2}}, MalformedReason.HEADER_MISMATCH),
        ({"message_id": "another-id"}, MalformedReason.HEADER_MISMATCH),
    ],
)
def test_a_newer_version_still_needs_its_identity_to_agree(
    change: dict[str, Any], reason: MalformedReason
) -> None:
    raw = _with(order_events("o-9")[1], lambda b: b.update(schema_version=CURRENT_VERSION + 1))
    for name, value in change.items():
        setattr(raw, name, value)
    with pytest.raises(MalformedEvent) as info:
        decode(raw)
    assert info.value.reason is reason


def test_a_newer_version_without_a_usable_seq_is_malformed() -> None:
    def zero(body: dict[str, Any]) -> None:
        body.update(schema_version=CURRENT_VERSION + 1, seq=0)

    raw = _with(order_events("o-9")[0], zero)
    raw.headers["seq"] = 0
    with pytest.raises(MalformedEvent):
        decode(raw)


@pytest.mark.parametrize("version", [0, -1, str(CURRENT_VERSION), True, None, [2]])
def test_versions_that_are_no_version_are_malformed(version: object) -> None:
    raw = _with(order_events("o-9")[0], lambda b: b.update(schema_version=version))
    with pytest.raises(MalformedEvent) as info:
        decode(raw)
    assert info.value.reason is MalformedReason.SCHEMA
    assert "schema_version" in info.value.detail
