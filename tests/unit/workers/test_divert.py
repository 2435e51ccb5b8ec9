"""Divert: a nacked republish is tried again in place; a returned one raises at once."""

from __future__ import annotations

from typing import Any

import aio_pika
import pytest
from aiormq.exceptions import DeliveryError, PublishError
from prometheus_client import CollectorRegistry

from workers.metrics import DownstreamMetrics, WorkerMetrics
from workers.session import divert as divert_module
from workers.session.divert import Divert


class Exchange:
    """Answers each publish with the next outcome: None (confirmed) or an exception."""

    def __init__(self, *outcomes: BaseException | None) -> None:
        self.outcomes = list(outcomes)
        self.published = 0

    async def publish(self, message: aio_pika.Message, routing_key: str) -> None:
        self.published += 1
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise outcome


def _divert(exchange: Exchange) -> tuple[Divert, DownstreamMetrics]:
    metrics = DownstreamMetrics(WorkerMetrics(CollectorRegistry()), "inventory", ["short"])
    ex: Any = exchange
    return Divert(ex, ex, metrics), metrics


def _nack() -> DeliveryError:
    return DeliveryError(None, None)  # type: ignore[arg-type]


async def test_a_nacked_republish_is_published_again_until_confirmed() -> None:
    exchange = Exchange(_nack(), _nack(), None)
    divert, metrics = _divert(exchange)
    await divert._confirmed(exchange, aio_pika.Message(b"{}"), "short", {})  # type: ignore[arg-type]
    assert exchange.published == 3
    assert metrics.republish_nacked.value == 2


async def test_a_returned_republish_raises_at_once() -> None:
    returned = PublishError.__new__(PublishError)
    exchange = Exchange(returned, None)
    divert, _ = _divert(exchange)
    with pytest.raises(PublishError):
        await divert._confirmed(exchange, aio_pika.Message(b"{}"), "short", {})  # type: ignore[arg-type]
    assert exchange.published == 1


async def test_nacks_past_the_window_hand_the_delivery_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(divert_module, "NACKED_RETRY_SECONDS", -1.0)
    exchange = Exchange(_nack(), _nack())
    divert, _ = _divert(exchange)
    with pytest.raises(DeliveryError):
        await divert._confirmed(exchange, aio_pika.Message(b"{}"), "short", {})  # type: ignore[arg-type]
    assert exchange.published == 1
