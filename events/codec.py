"""Encode events to AMQP messages and decode them back, per the wire contract."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

import aio_pika
from pydantic import ValidationError

from events import headers as h
from events.models import EVENT_ADAPTER, AnyEvent

CONTENT_TYPE = "application/json"


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
    """Decode an AMQP message into its event, or raise MalformedEvent with the reason."""
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
        errors = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '<body>'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise MalformedEvent(MalformedReason.SCHEMA, errors) from None
    _check_envelope_matches(event, message)
    return event


def _check_envelope_matches(event: AnyEvent, message: MessageLike) -> None:
    headers: Mapping[str, Any] = message.headers or {}
    order_id = _text(headers.get(h.ORDER_ID))
    seq = headers.get(h.SEQ)
    if order_id is None or seq is None:
        missing = [n for n, v in ((h.ORDER_ID, order_id), (h.SEQ, seq)) if v is None]
        raise MalformedEvent(MalformedReason.MISSING_HEADER, f"missing {', '.join(missing)}")
    mismatches = []
    if order_id != event.order_id:
        mismatches.append(f"order_id header {order_id!r} != body {event.order_id!r}")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq != event.seq:
        mismatches.append(f"seq header {seq!r} != body {event.seq}")
    if message.message_id is not None and message.message_id != str(event.event_id):
        mismatches.append(f"message_id {message.message_id!r} != event_id {event.event_id}")
    if message.type is not None and message.type != event.event_type.value:
        mismatches.append(f"type {message.type!r} != event_type {event.event_type.value}")
    if mismatches:
        raise MalformedEvent(MalformedReason.HEADER_MISMATCH, "; ".join(mismatches))


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return repr(value)
    return value if value is None or isinstance(value, str) else repr(value)
