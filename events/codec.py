"""Encode events to AMQP messages and decode them back, per the wire contract."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

import aio_pika
from pydantic import ValidationError

from events import headers as h
from events.evolution import CURRENT_VERSION, UPCASTS, UnsupportedVersion, upcast, version_of
from events.models import EVENT_ADAPTER, AnyEvent

CONTENT_TYPE = "application/json"
# What every envelope on the wire carries itself (event_type is the union's tag: required).
_CARRIED = frozenset({"event_id", "occurred_at"})


class MalformedReason(StrEnum):
    """Why a message is not a valid event."""

    CONTENT_TYPE = "content-type"
    ENCODING = "encoding"
    BAD_JSON = "bad-json"
    SCHEMA = "schema"
    MISSING_HEADER = "missing-header"
    HEADER_MISMATCH = "header-mismatch"


class MalformedEvent(ValueError):
    """A message that cannot be decoded into an event; workers dead-letter it."""

    def __init__(self, reason: MalformedReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")


class MessageLike(Protocol):
    """What decode reads of a message (an aio-pika incoming or outgoing message)."""

    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> Any: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def type(self) -> str | None: ...
    @property
    def content_type(self) -> str | None: ...


class ReceivedLike(MessageLike, Protocol):
    """A received message whose other properties a republished copy keeps."""

    @property
    def timestamp(self) -> datetime | None: ...
    @property
    def app_id(self) -> str | None: ...


def encode(event: AnyEvent, app_id: str = "order-service") -> aio_pika.Message:
    """Build the persistent AMQP message that carries event."""
    return message_for(
        event.model_dump_json().encode(),
        event_id=str(event.event_id),
        event_type=event.event_type.value,
        order_id=event.order_id,
        seq=event.seq,
        occurred_at=event.occurred_at,
        app_id=app_id,
    )


def message_for(
    body: bytes,
    *,
    event_id: str,
    event_type: str,
    order_id: str,
    seq: int,
    occurred_at: datetime,
    app_id: str,
) -> aio_pika.Message:
    """Build the message for an already-serialized envelope (e.g. an outbox row)."""
    return aio_pika.Message(
        body=body,
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=event_id,
        type=event_type,
        timestamp=occurred_at,
        app_id=app_id,
        headers={h.ORDER_ID: order_id, h.SEQ: seq, h.ATTEMPTS: 0},
    )


def republished(message: ReceivedLike, headers: dict[str, Any]) -> aio_pika.Message:
    """A persistent copy of a received message with new headers (retry, DLQ, redrive, replay)."""
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        type=message.type,
        timestamp=message.timestamp,
        app_id=message.app_id,
    )


def decode(message: MessageLike) -> AnyEvent:
    """Decode an AMQP message into its event (upcast when of an older schema_version).

    Raises MalformedEvent with the reason, or UnsupportedVersion for a newer schema_version.
    """
    if message.content_type not in (None, CONTENT_TYPE):
        raise MalformedEvent(MalformedReason.CONTENT_TYPE, f"content_type {message.content_type!r}")
    try:
        # Parsing and validating in one pass (pydantic-core) is the hot path of every worker.
        event = EVENT_ADAPTER.validate_json(message.body)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            try:
                message.body.decode("utf-8")
            except UnicodeDecodeError as err:
                raise MalformedEvent(
                    MalformedReason.ENCODING, f"body is not UTF-8: {err}"
                ) from None
            raise MalformedEvent(MalformedReason.BAD_JSON, str(first["msg"])[:300]) from None
        event = _of_another_version(message, exc)
    if not event.model_fields_set >= _CARRIED:
        # The models give a new event an id and a time; a received one must carry its own.
        missing = ", ".join(sorted(_CARRIED - event.model_fields_set))
        raise MalformedEvent(MalformedReason.SCHEMA, f"{missing}: missing from the envelope")
    _check_envelope_matches(event, message)
    return event


def _of_another_version(message: MessageLike, exc: ValidationError) -> AnyEvent:
    """A body the current models refuse: an older version upcast, a newer one refused as
    unsupported, anything else malformed with the models' errors."""
    try:
        envelope = json.loads(message.body)
    except ValueError:  # pydantic's parser accepted what the json module does not
        raise _schema_error(exc) from None
    version = version_of(envelope)
    if version is None or version == CURRENT_VERSION:
        raise _schema_error(exc)
    if version in UPCASTS:
        try:
            return EVENT_ADAPTER.validate_json(json.dumps(upcast(envelope)))
        except ValidationError as upcast_exc:
            raise _schema_error(upcast_exc, f"read as version {version}: ") from None
    if version < CURRENT_VERSION:
        raise _schema_error(exc)
    # A newer version keeps the envelope's identity (order_id, seq, event_id): the guard
    # parks its order by them, so they must agree with the headers the exchange routed by.
    order_id, seq = _routing_headers(message)
    _check_identity(
        message,
        (order_id, seq),
        (envelope.get("order_id"), envelope.get("seq")),
        (envelope.get("event_id"), envelope.get("event_type")),
    )
    if not order_id or seq < 1:
        raise MalformedEvent(MalformedReason.SCHEMA, f"order_id {order_id!r}, seq {seq}: unusable")
    raise UnsupportedVersion(version, order_id, seq)


def _schema_error(exc: ValidationError, prefix: str = "") -> MalformedEvent:
    errors = "; ".join(
        "event_type: missing from the envelope"
        if e["type"] == "union_tag_not_found"
        else f"{'.'.join(map(str, e['loc'])) or '<body>'}: {e['msg']}"
        for e in exc.errors()[:5]
    )
    return MalformedEvent(MalformedReason.SCHEMA, prefix + errors)


def _routing_headers(message: MessageLike) -> tuple[str, Any]:
    """The order_id and seq headers, which the hash exchange and the guard read."""
    headers: Mapping[str, Any] = message.headers or {}
    order_id, seq = _text(headers.get(h.ORDER_ID)), headers.get(h.SEQ)
    if order_id is None or seq is None:
        missing = [n for n, v in ((h.ORDER_ID, order_id), (h.SEQ, seq)) if v is None]
        raise MalformedEvent(MalformedReason.MISSING_HEADER, f"missing {', '.join(missing)}")
    return order_id, seq


def _check_identity(
    message: MessageLike,
    headers: tuple[str, Any],
    body: tuple[object, object],
    properties: tuple[object, object],
) -> None:
    """The order_id and seq headers agree with the body's, and the message_id and type
    properties (when set) with its event_id and event_type."""
    (order_id, seq), (body_order_id, body_seq), (event_id, event_type) = headers, body, properties
    mismatches = []
    if order_id != body_order_id:
        mismatches.append(f"order_id header {order_id!r} != body {body_order_id!r}")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq != body_seq:
        mismatches.append(f"seq header {seq!r} != body {body_seq!r}")
    if message.message_id is not None and message.message_id != event_id:
        mismatches.append(f"message_id {message.message_id!r} != event_id {event_id}")
    if message.type is not None and message.type != event_type:
        mismatches.append(f"type {message.type!r} != event_type {event_type}")
    if mismatches:
        raise MalformedEvent(MalformedReason.HEADER_MISMATCH, "; ".join(mismatches))


def _check_envelope_matches(event: AnyEvent, message: MessageLike) -> None:
    _check_identity(
        message,
        _routing_headers(message),
        (event.order_id, event.seq),
        (str(event.event_id), event.event_type.value),
    )


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return repr(value)
    return value if value is None or isinstance(value, str) else repr(value)
