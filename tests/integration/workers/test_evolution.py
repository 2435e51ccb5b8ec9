"""Events that evolve, through the real broker and workers: version 1 events and added fields
apply beside current ones; an event of a newer version parks its order with its reason until
workers that read it are deployed, and the order's redrive then applies it in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from sqlalchemy import select

from events import AnyEvent, OrderShippedEvent, encode
from events.evolution import CURRENT_VERSION, UPCASTS, Envelope
from operations.cli import main
from tests.support.amqp import depth, publish_to
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.workers import by_order, running_workers
from topology import names
from topology.spec import TopologySpec
from workers.process.app import Workers

pytestmark = pytest.mark.integration
FUTURE = 99


def _message(event: AnyEvent, change: Callable[[dict[str, Any]], object]) -> tuple[str, Any]:
    """The event's message, its JSON body changed as another producer would write it."""
    message = encode(event)
    body = json.loads(message.body)
    change(body)
    message.body = json.dumps(body).encode()
    return event.event_type.value, message


def _v1_with_additions(body: dict[str, Any]) -> None:
    """As a version 1 producer that also added fields of its own writes it."""
    body["schema_version"] = 1
    body["trace_id"] = "t-1"
    body["payload"]["channel"] = "mobile"
    if body["event_type"] == "order.shipped":
        body["payload"]["tracking"] = body["payload"].pop("tracking_number")


def _current_with_additions(body: dict[str, Any]) -> None:
    body["payload"]["channel"] = "web"


def _future(body: dict[str, Any]) -> None:
    """As a producer of version 99 writes order.paid: a payload of another shape."""
    body["schema_version"] = FUTURE
    body["payload"] = {"amount": {"value": body["payload"]["amount"], "currency": "EUR"}}


async def _applied(workers: Workers) -> dict[str, dict[str, list[int]]]:
    return {w.name: by_order(await w.store.inbox_rows()) for w in workers.workers}


async def test_version_1_events_and_added_fields_apply_beside_current_ones(
    vhost: Vhost, fast_spec: TopologySpec, tmp_path: Path
) -> None:
    vhost.apply(fast_spec)
    seen: dict[str, str] = {}  # the tracking number each shipped order's handler saw

    def record(event: AnyEvent, attempts: int) -> None:
        if isinstance(event, OrderShippedEvent):
            seen[event.order_id] = event.payload.tracking_number

    orders = {f"old-{i}": order_events(f"old-{i}") for i in range(6)}
    orders |= {f"new-{i}": order_events(f"new-{i}") for i in range(6)}
    messages = [
        _message(e, _v1_with_additions if o.startswith("old-") else _current_with_additions)
        for o, events in orders.items()
        for e in events
    ]
    downstreams = ["inventory", "fraud_audit"]
    async with running_workers(
        vhost.amqp_url, fast_spec, tmp_path, downstreams, faults=record
    ) as workers:
        await publish_to(vhost.amqp_url, "orders", messages)
        want = {d: {o: [1, 2, 3] for o in orders} for d in downstreams}

        async def all_applied() -> bool:
            return await _applied(workers) == want

        await eventually(all_applied, what="every order applied by both downstreams")
        inventory = workers.workers[0]
        stock = inventory.handler.stock  # type: ignore[attr-defined]
        reserved = dict(
            (row.sku, row.reserved) for row in await inventory.store.query(select(stock))
        )
    assert reserved == {"SKU-1": 2 * len(orders), "SKU-2": len(orders)}
    # The handler saw version 1's `tracking` as the current model's `tracking_number`.
    assert seen == {o: f"TRK{o[-7:]}" for o in orders}
    for d in downstreams:
        assert await depth(vhost.amqp_url, names.dlq(d)) == 0


async def test_a_newer_version_parks_its_order_until_workers_read_it(
    vhost: Vhost,
    fast_spec: TopologySpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    vhost.apply(fast_spec)
    vhost.env(monkeypatch)
    d = "inventory"
    created, paid, shipped = order_events("ord-new")
    good = {f"ord-{i:02d}": order_events(f"ord-{i:02d}") for i in range(10)}

    async def cli(*args: str) -> str:
        capsys.readouterr()
        assert await asyncio.to_thread(main, list(args)) == 0
        return capsys.readouterr().out

    async with running_workers(vhost.amqp_url, fast_spec, tmp_path, [d]) as workers:
        await publish_to(
            vhost.amqp_url,
            "orders",
            [
                _message(created, lambda b: None),
                _message(paid, _future),
                _message(shipped, lambda b: None),
                *(_message(e, lambda b: None) for events in good.values() for e in events),
            ],
        )

        async def two_dead() -> bool:
            return await depth(vhost.amqp_url, names.dlq(d)) == 2

        await eventually(two_dead, what="version 99 and its successor dead-lettered")
        want = {o: [1, 2, 3] for o in good} | {"ord-new": [1]}

        async def others_applied() -> bool:
            return (await _applied(workers))[d] == want

        await eventually(others_applied, what="the other orders applied, ord-new up to seq 1")
        rows = json.loads(await cli("dlq", "list", d, "--json"))
        assert sorted((r["order_id"], r["seq"], r["reason"]) for r in rows) == [
            ("ord-new", 2, "unsupported-version"),
            ("ord-new", 3, "blocked-by-predecessor"),
        ]
        shown = " ".join((await cli("dlq", "show", d, str(paid.event_id))).split())
        assert f"schema_version {FUTURE} is newer than this reader knows" in shown
        assert f"dlq redrive {d} --order-id ord-new" in shown
        status = json.loads(await cli("status", "--json"))
        row = next(r for r in status["downstreams"] if r["downstream"] == d)
        assert (row["dlq"], row["parked_orders"]) == (2, 1)
        progress = await workers.workers[0].store.load_progress(["ord-new"])
        assert progress["ord-new"].parked_event_id == str(paid.event_id)

        # The upgrade, in this process: workers that read version 99 (here by a step from it
        # to this model, where a real upgrade would bring a model of version 99 and upcasts).
        def from_future(envelope: Envelope) -> Envelope:
            amount = envelope["payload"]["amount"]["value"]
            return {
                **envelope,
                "schema_version": CURRENT_VERSION,
                "payload": {"amount": amount, "method": "card"},
            }

        monkeypatch.setitem(UPCASTS, FUTURE, from_future)
        assert "redrove 2 message(s) of 1 order(s)" in await cli(
            "dlq", "redrive", d, "--order-id", "ord-new"
        )

        async def whole() -> bool:
            return (await _applied(workers))[d].get("ord-new") == [1, 2, 3]

        await eventually(whole, what="ord-new applied in order after the upgrade")
        progress = await workers.workers[0].store.load_progress(["ord-new"])
        assert progress["ord-new"].parked_event_id is None
    assert await depth(vhost.amqp_url, names.dlq(d)) == 0


def test_the_message_helper_changes_only_the_body() -> None:
    name, message = _message(order_events("o-1")[1], _future)
    assert name == "order.paid" and isinstance(message, aio_pika.Message)
    assert json.loads(message.body)["schema_version"] == FUTURE
    assert message.headers == {"order_id": "o-1", "seq": 2, "x-attempts": 0}
