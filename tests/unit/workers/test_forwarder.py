"""The forwarder over fakes: a copy is published when due, not before; a nacked or failed
publish is tried again (on a new channel) until confirmed; the copy is acked only after."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiormq.exceptions import DeliveryError
from prometheus_client import CollectorRegistry

from events import encode
from events import headers as h
from tests.support.factories import order_events
from tests.support.publishing import Publisher
from workers.applying.policy import now_ms
from workers.metrics import DownstreamMetrics, WorkerMetrics
from workers.session import forwarder as forwarder_module
from workers.session.forwarder import Forwarder


class Copy:
    """A copy delivered from a tier: acked once, and when."""

    def __init__(self, retry_at: int) -> None:
        message = encode(order_events("o-1")[1])
        self.body = message.body
        self.headers: dict[str, Any] = {**(message.headers or {}), h.RETRY_AT: retry_at}
        self.message_id = message.message_id
        self.type = message.type
        self.content_type = message.content_type
        self.timestamp = message.timestamp
        self.app_id = message.app_id
        self.acked_at: list[int] = []

    async def ack(self) -> None:
        self.acked_at.append(now_ms())


def _forwarder(publisher: Publisher) -> tuple[Forwarder, DownstreamMetrics]:
    metrics = DownstreamMetrics(WorkerMetrics(CollectorRegistry()), "inventory", ["short"])
    forwarder = Forwarder("inventory", ["short"], None, metrics)  # type: ignore[arg-type]
    forwarder.publisher = publisher  # type: ignore[assignment]
    return forwarder, metrics


def _nack() -> DeliveryError:
    return DeliveryError(None, None)  # type: ignore[arg-type]


async def test_a_copy_goes_back_to_its_shards_when_due_then_is_acked() -> None:
    publisher = Publisher(None)
    forwarder, metrics = _forwarder(publisher)
    copy = Copy(now_ms() + 300)
    await forwarder.forward(copy)
    [(exchange, message, at)] = publisher.published
    assert exchange == "inventory"  # the downstream's consistent-hash exchange
    assert at >= copy.headers[h.RETRY_AT]
    assert h.RETRY_AT not in (message.headers or {})
    assert (message.headers or {})[h.ORDER_ID] == "o-1"
    assert len(copy.acked_at) == 1 and copy.acked_at[0] >= at
    assert metrics.forwarded.value == 1


async def test_a_nacked_forward_is_published_again_until_confirmed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(forwarder_module, "backoff_delay", lambda *a, **k: 0.01)
    publisher = Publisher(_nack(), TimeoutError(), None)
    forwarder, metrics = _forwarder(publisher)
    copy = Copy(0)
    await forwarder.forward(copy)
    assert len(publisher.published) == 3
    assert len(copy.acked_at) == 1, "acked before its copy was confirmed, or twice"
    assert metrics.republish_nacked.value == 2


async def test_a_copy_is_never_acked_while_its_publish_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(forwarder_module, "backoff_delay", lambda *a, **k: 0.01)
    publisher = Publisher(*[_nack()] * 1000)
    forwarder, _ = _forwarder(publisher)
    copy = Copy(0)
    task = asyncio.create_task(forwarder.forward(copy))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(publisher.published) > 1 and copy.acked_at == []
