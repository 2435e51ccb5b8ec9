"""The workers against a real broker: order, retries, poison, malformed, duplicates."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from sqlalchemy import select

from broker.objects import BindingDef
from events import AnyEvent, encode
from tests.support.amqp import publish_confirmed, publish_events, take_all
from tests.support.factories import order_events
from tests.support.fixtures import BROKERS, Vhost
from tests.support.polling import eventually
from tests.support.producer import postgres_database
from tests.support.workers import (
    by_order,
    counts_are,
    dead_lettered_at_most,
    metric,
    running_workers,
    workers_in_order,
)
from topology import names
from topology.spec import TopologySpec
from workers.api import TransientError

pytestmark = pytest.mark.integration


def _interleave(orders: list[list[AnyEvent]], seed: int) -> list[AnyEvent]:
    rng = random.Random(seed)
    pending = [list(o) for o in orders]
    out = []
    while pending:
        lane = rng.choice(pending)
        out.append(lane.pop(0))
        if not lane:
            pending.remove(lane)
    return out


async def _dlq(vhost: Vhost, downstream: str, count: int) -> list[Any]:
    return await take_all(vhost.amqp_url, names.dlq(downstream), count)


async def test_ordering_under_transient_failures(
    vhost: Vhost, fast_spec: TopologySpec, tmp_path: Path
) -> None:
    vhost.apply(fast_spec)
    orders = [order_events(f"ord-{i:04d}") for i in range(500)]
    rng = random.Random(21)
    # Random events fail 1 or 2 times in every downstream before they succeed.
    flaky = {str(e.event_id): rng.randint(1, 2) for o in orders for e in o if rng.random() < 0.15}

    def faults(event: AnyEvent, attempts: int) -> None:
        if attempts < flaky.get(str(event.event_id), 0):
            raise TransientError("injected")

    async with running_workers(vhost.amqp_url, fast_spec, tmp_path, faults=faults) as workers:
        await publish_events(vhost.amqp_url, _interleave(orders, seed=3))
        expected = {d: 1500 for d in fast_spec.downstreams}
        await eventually(
            lambda: counts_are(workers, expected),
            within=120,
            what="all applied",
            always=[workers_in_order(workers), dead_lettered_at_most(workers, 0)],
        )
        # The effects, not the inbox (whose key cannot repeat), show an event applied twice:
        # each order reserves 2 x SKU-1 and 1 x SKU-2 and credits 24 points, once.
        by_name = {w.name: w for w in workers.workers}
        inventory, loyalty = by_name["inventory"], by_name["loyalty"]
        stock = inventory.handler.stock  # type: ignore[attr-defined]
        reserved = dict(await inventory.store.query(select(stock.c.sku, stock.c.reserved)))
        assert reserved == {"SKU-1": 1000, "SKU-2": 500}
        points = loyalty.handler.points  # type: ignore[attr-defined]
        credited = dict(await loyalty.store.query(select(points.c.customer_id, points.c.points)))
        assert credited == {f"cust-{o[0].order_id}": 24 for o in orders}
        for worker in workers.workers:
            rows = await worker.store.inbox_rows()
            assert all(s == [1, 2, 3] for s in by_order(rows).values()), (
                f"{worker.name} out of order"
            )
            # Each downstream retried every injected failure once, on its own (a deferral
            # waits in the store, not in a tier).
            tiers = fast_spec.downstream(worker.name).retry.tiers
            retried = sum(
                metric(workers, "bus_worker_retried_total", worker.name, tier=t) for t in tiers
            )
            assert retried == sum(flaky.values()), worker.name


@pytest.mark.parametrize("vhost", BROKERS, indirect=True)
async def test_poison_parks_the_order_and_everything_else_applies(
    vhost: Vhost, fast_spec: TopologySpec, tmp_path: Path
) -> None:
    vhost.apply(fast_spec)
    poisoned = order_events("ord-poison", sku="POISON-SKU-9")
    others = [order_events(f"ord-{i:03d}") for i in range(50)]
    async with running_workers(vhost.amqp_url, fast_spec, tmp_path) as workers:
        await publish_events(vhost.amqp_url, _interleave([poisoned, *others], seed=5))
        expected = {d: 150 for d in fast_spec.downstreams}
        await eventually(
            lambda: counts_are(workers, expected),
            what="others applied",
            always=[workers_in_order(workers), dead_lettered_at_most(workers, 3)],
        )
        for worker in workers.workers:
            rows = await worker.store.inbox_rows()
            assert "ord-poison" not in {r.order_id for r in rows}
            progress = await worker.store.load_progress(["ord-poison"])
            assert progress["ord-poison"].parked_event_id == str(poisoned[0].event_id)
    for d in fast_spec.downstreams:
        dead = await _dlq(vhost, d, 3)
        reasons = {m.message_id: m.headers["x-dead-reason"] for m in dead}
        assert reasons == {
            str(poisoned[0].event_id): "non-retryable",
            str(poisoned[1].event_id): "blocked-by-predecessor",
            str(poisoned[2].event_id): "blocked-by-predecessor",
        }, d
        created = next(m for m in dead if m.message_id == str(poisoned[0].event_id))
        assert created.headers["x-error-type"] == "NonRetryableError"
        assert "POISON-SKU-9" in created.headers["x-error-message"]
        assert "Traceback" in created.headers["x-error-stack"]
        assert created.headers["x-failed-queue"].startswith(f"{d}.")
        assert created.headers["x-failed-at"] and created.headers["order_id"] == "ord-poison"


async def test_malformed_messages_are_dead_lettered_and_the_worker_goes_on(
    vhost: Vhost, fast_spec: TopologySpec, tmp_path: Path
) -> None:
    vhost.apply(fast_spec)
    good = order_events("ord-good")
    bad = [
        (
            "order.created",
            aio_pika.Message(
                b"{not json", headers={"order_id": "x", "seq": 1}, message_id="bad-json"
            ),
        ),
        ("order.paid", aio_pika.Message(encode(good[1]).body, message_id="no-headers")),
        (
            "order.refunded",
            aio_pika.Message(
                b'{"event_type": "order.refunded"}',
                headers={"order_id": "x", "seq": 4},
                message_id="unknown-type",
            ),
        ),
    ]
    d = "inventory"
    async with running_workers(vhost.amqp_url, fast_spec, tmp_path, names=[d]) as workers:
        connection = await aio_pika.connect(vhost.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await publish_confirmed(channel, "orders", bad)
            await publish_confirmed(
                channel, "orders", [(e.event_type.value, encode(e)) for e in good]
            )
        await eventually(lambda: counts_are(workers, {d: 3}), what="good order applied")
    dead = await _dlq(vhost, d, 3)
    assert {m.message_id: m.headers["x-dead-reason"] for m in dead} == {
        "bad-json": "malformed",
        "no-headers": "malformed",
        "unknown-type": "malformed",
    }
    assert all(m.headers["x-error-type"] == "MalformedEvent" for m in dead)


async def test_duplicates_apply_once_and_reversed_order_applies_in_order(
    vhost: Vhost, fast_spec: TopologySpec, tmp_path: Path
) -> None:
    vhost.apply(fast_spec)
    twice = order_events("ord-twice")
    reversed_order = order_events("ord-reversed")
    async with running_workers(vhost.amqp_url, fast_spec, tmp_path) as workers:
        await publish_events(vhost.amqp_url, [twice[0], twice[0], twice[1], twice[1], twice[2]])
        await publish_events(vhost.amqp_url, list(reversed(reversed_order)))
        expected = {d: 6 for d in fast_spec.downstreams}
        await eventually(
            lambda: counts_are(workers, expected),
            what="both orders applied",
            always=[workers_in_order(workers), dead_lettered_at_most(workers, 0)],
        )
        for worker in workers.workers:
            orders = by_order(await worker.store.inbox_rows())
            assert orders == {"ord-twice": [1, 2, 3], "ord-reversed": [1, 2, 3]}, worker.name
            labels = {"downstream": worker.name}
            assert workers.registry.get_sample_value("bus_worker_duplicates_total", labels) >= 2
            assert workers.registry.get_sample_value("bus_worker_deferred_total", labels) >= 2
        inventory = next(w for w in workers.workers if w.name == "inventory")
        stock = inventory.handler.stock  # type: ignore[attr-defined]
        reserved = dict(await inventory.store.query(select(stock.c.sku, stock.c.reserved)))
        # Each order reserves 2 x SKU-1 and 1 x SKU-2: applied once each, not three times.
        assert reserved == {"SKU-1": 4, "SKU-2": 2}


async def test_postgresql_stores_take_the_same_path(
    vhost: Vhost, fast_spec: TopologySpec, tmp_path: Path
) -> None:
    vhost.apply(fast_spec)
    orders = [order_events(f"ord-{i:03d}") for i in range(30)]
    async with postgres_database() as dsn:
        async with running_workers(
            vhost.amqp_url, fast_spec, tmp_path, names=["inventory", "loyalty"], dsn=dsn
        ) as workers:
            assert all(not w.store.inline for w in workers.workers)
            await publish_events(vhost.amqp_url, [e for o in orders for e in o])
            expected = {"inventory": 90, "loyalty": 90}
            await eventually(
                lambda: counts_are(workers, expected),
                what="applied on PG",
                always=workers_in_order(workers),
            )
            for worker in workers.workers:
                rows = await worker.store.inbox_rows()
                assert all(s == [1, 2, 3] for s in by_order(rows).values())
            loyalty = next(w for w in workers.workers if w.name == "loyalty")
            points = loyalty.handler.points  # type: ignore[attr-defined]
            balances = dict(
                await loyalty.store.query(select(points.c.customer_id, points.c.points))
            )
            # order_events: 2 x 9.99 + 5.00 = 24.98 paid per order -> 24 points each.
            assert balances == {f"cust-ord-{i:03d}": 24 for i in range(30)}
        assert not list(tmp_path.glob("*.db")), "PostgreSQL stores must not write SQLite files"


async def test_a_retry_the_broker_cannot_route_is_never_acked_away(
    vhost: Vhost, fast_spec: TopologySpec, tmp_path: Path
) -> None:
    # The tier's binding is gone (a topology changed but not applied): the retry publish
    # comes back unroutable. The original must not be acked as if it were moved; handed
    # back again and again, the broker's delivery limit dead-letters it instead.
    vhost.apply(fast_spec)
    d = "inventory"
    tier = next(iter(fast_spec.downstreams[d].retry.tiers))
    vhost.client.unbind(
        vhost.name,
        BindingDef(names.retry_exchange(d), names.retry_queue(d, tier), "queue", tier),
    )
    stuck = order_events("ord-stuck")

    def faults(event: AnyEvent, attempts: int) -> None:
        if event.order_id == "ord-stuck":
            raise TransientError("dependency down")

    async with running_workers(vhost.amqp_url, fast_spec, tmp_path, [d], faults) as workers:
        await publish_events(vhost.amqp_url, [*stuck, *order_events("ord-fine")])
        dead = await _dlq(vhost, d, 1)
        rows = await workers.workers[0].store.inbox_rows()
        held = await workers.workers[0].store.waiting_rows()
    assert {m.message_id for m in dead} == {str(stuck[0].event_id)}
    assert {m.headers["x-death"][0]["reason"] for m in dead} == {"delivery_limit"}
    # Its successors wait in the store for it (no tier involved), not lost.
    assert [(r.order_id, r.seq) for r in held] == [("ord-stuck", 2), ("ord-stuck", 3)]
    assert {r.order_id for r in rows} == {"ord-fine"}
