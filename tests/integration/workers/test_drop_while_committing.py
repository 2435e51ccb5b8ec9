"""The broker drops a worker's connection while its lanes are still committing: the commits
finish, their acks cannot reach the closed channel, the broker redelivers those events to the
new session, and the guard recognises them as applied. Every event is applied once, in order,
with the effect exact."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support import topologies
from tests.support.amqp import publish_events
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.producer import postgres_database
from tests.support.workers import by_order, metric, running_workers

pytestmark = pytest.mark.integration
D = "inventory"
ORDERS = 200


async def test_a_connection_dropped_while_lanes_commit_applies_everything_once(
    vhost: Vhost, tmp_path: Path
) -> None:
    data = topologies.fast_data()
    inventory = {**data["downstreams"][D], "handler": "tests.support.slow_handlers:SlowInventory"}
    data["downstreams"] = {D: inventory}
    spec = topologies.spec_of(data)
    vhost.apply(spec)
    orders = [order_events(f"ord-{i:03d}") for i in range(ORDERS)]
    # On PostgreSQL the store's transactions run on a thread of their own, so this test's
    # checks go on while they commit (a SQLite store commits on the event loop).
    async with (
        postgres_database() as dsn,
        running_workers(vhost.amqp_url, spec, tmp_path, [D], dsn=dsn) as workers,
    ):
        worker = workers.workers[0]
        assert not worker.store.inline
        await publish_events(vhost.amqp_url, [e for o in orders for e in o])

        # The connection the worker consumes on, as the broker drops it. The management API
        # lists consumers a few seconds late; the slow store commits for about 30 s.
        def consuming() -> str | None:
            for consumer in vhost.client.consumers(vhost.name):
                channel = consumer.get("channel_details")
                if isinstance(channel, dict) and channel.get("connection_name"):
                    return str(channel["connection_name"])
            return None

        connection = await eventually(consuming, within=30, what="the consuming connection")
        applied_before = len(await worker.store.inbox_rows())
        assert 0 < applied_before < 3 * ORDERS, "the drop must land while commits go on"
        vhost.client.close_connection(connection, "test: dropped while committing")

        async def whole() -> dict[str, list[int]] | None:
            seqs = by_order(await worker.store.inbox_rows())
            done = len(seqs) == ORDERS and all(len(s) == 3 for s in seqs.values())
            return seqs if done else None

        seqs = await eventually(whole, within=120, what="every order applied after the drop")
        assert all(s == [1, 2, 3] for s in seqs.values())
        stock = worker.handler.stock  # type: ignore[attr-defined]
        reserved = dict(await worker.store.query(select(stock.c.sku, stock.c.reserved)))
        assert reserved == {"SKU-1": 2 * ORDERS, "SKU-2": ORDERS}

        # The old session's lanes went on committing after its connection was gone; then the
        # broker's returned deliveries came to the new session, every one already applied.
        def settled() -> dict[str, float] | None:
            seen = {
                n: metric(workers, f"bus_worker_{n}", D)
                for n in ("redelivered_total", "consumed_total", "in_flight", "applied_total")
            }
            done = seen["redelivered_total"] > 0 and seen["in_flight"] == 0
            return (
                seen
                if done and seen["consumed_total"] == 3 * ORDERS + seen["redelivered_total"]
                else None
            )

        seen = await eventually(settled, within=60, what="the returned deliveries settled")
        assert seen["applied_total"] == 3 * ORDERS  # none applied twice
        assert metric(workers, "bus_worker_duplicates_total", D) == seen["redelivered_total"]
