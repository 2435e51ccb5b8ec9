"""Divert: a nacked republish is tried again (the publisher moves to a new channel); a
returned one raises at once; every copy it republishes (retry, deferral, dead letter) keeps
the order key the hash exchange routes by and the guard orders by."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aio_pika
import pytest
from aiormq.exceptions import DeliveryError, PublishError
from prometheus_client import CollectorRegistry

from events import decode, encode
from events import headers as h
from tests.support.factories import order_events, raw_of, received_of
from tests.support.publishing import Publisher
from topology.spec import RetrySpec
from workers.api import NonRetryableError
from workers.applying.policy import DeadLetter, Retry, Wait, on_failure, on_gap
from workers.metrics import DownstreamMetrics, WorkerMetrics
from workers.session import divert as divert_module
from workers.session.divert import Divert


def _divert(publisher: Publisher) -> tuple[Divert, DownstreamMetrics]:
    metrics = DownstreamMetrics(WorkerMetrics(CollectorRegistry()), "inventory", ["short"])
    fake: Any = publisher
    return Divert(fake, "inventory", metrics), metrics


def _nack() -> DeliveryError:
    return DeliveryError(None, None)  # type: ignore[arg-type]


async def test_a_nacked_republish_is_published_again_until_confirmed() -> None:
    publisher = Publisher(_nack(), TimeoutError(), None)
    divert, metrics = _divert(publisher)
    await divert._confirmed(divert.retry, aio_pika.Message(b"{}"), "short", {})
    assert len(publisher.published) == 3
    assert metrics.republish_nacked.value == 2


async def test_a_returned_republish_raises_at_once() -> None:
    returned = PublishError.__new__(PublishError)
    publisher = Publisher(returned, None)
    divert, _ = _divert(publisher)
    with pytest.raises(PublishError):
        await divert._confirmed(divert.retry, aio_pika.Message(b"{}"), "short", {})
    assert len(publisher.published) == 1


async def test_nacks_past_the_window_hand_the_delivery_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(divert_module, "NACKED_RETRY_SECONDS", -1.0)
    publisher = Publisher(_nack(), _nack())
    divert, _ = _divert(publisher)
    with pytest.raises(DeliveryError):
        await divert._confirmed(divert.retry, aio_pika.Message(b"{}"), "short", {})
    assert len(publisher.published) == 1


RETRY = RetrySpec.model_validate({"tiers": {"short": "1s", "long": "5s"}, "max_attempts": 3})
PAID = order_events("o-7")[1]
Decide = Callable[[dict[str, Any]], Retry | DeadLetter | Wait]
DECISIONS: dict[str, Decide] = {
    "retried": lambda hd: on_failure(hd, RuntimeError("db down"), RETRY, "d.1"),
    "exhausted": lambda hd: on_failure({**hd, h.ATTEMPTS: 2}, RuntimeError("x"), RETRY, "d.1"),
    "non-retryable": lambda hd: on_failure(hd, NonRetryableError("bad sku"), RETRY, "d.1"),
    "expired": lambda hd: on_gap(hd, False, RETRY, "d.1", "seq 2 before seq 1", 0),
    "blocked": lambda hd: on_gap(hd, True, RETRY, "d.1", "parked behind e-1"),
}


@pytest.mark.parametrize("decide", DECISIONS.values(), ids=DECISIONS.keys())
async def test_every_republished_copy_keeps_the_order_key_and_the_event(decide: Decide) -> None:
    # As a retry tier hands a message back: with the broker's death headers.
    message = encode(PAID)
    message.headers = {**(message.headers or {}), h.DEATH: [{"queue": "d.retry.short"}]}
    received = received_of(message)
    decision = decide(dict(received.headers))
    assert not isinstance(decision, Wait)
    publisher = Publisher(None)
    divert, _ = _divert(publisher)
    await divert.move(received, decision, {})
    [(exchange, copy, _)] = publisher.published
    [routing_key] = publisher.routing_keys
    assert exchange == (divert.retry if isinstance(decision, Retry) else divert.dead)
    headers = copy.headers or {}
    assert (headers.get(h.ORDER_ID), headers.get(h.SEQ)) == ("o-7", 2), (
        f"the {type(decision).__name__} copy lost its order key: {headers}"
    )
    assert h.DEATH not in headers
    assert routing_key == (decision.tier if isinstance(decision, Retry) else "")
    # The copy decodes to the same event: the guard reads it as the original.
    assert decode(raw_of(copy)) == PAID
    assert (copy.message_id, copy.type) == (str(PAID.event_id), PAID.event_type.value)
