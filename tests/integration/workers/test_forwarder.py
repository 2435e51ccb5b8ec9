"""Retries without the broker's dead-lettering: a retried event waits in its tier until its
x-retry-at, then the workers' forwarder brings it back to its shard, confirmed; it applies
after its delay, in order, once, and the tiers end empty."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from broker.connect import connect
from broker.queues import depths
from events import AnyEvent
from tests.support import topologies
from tests.support.amqp import publish_events
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.workers import (
    by_order,
    dead_lettered_at_most,
    metric,
    running_workers,
    workers_in_order,
)
from topology import names
from workers.api import TransientError

pytestmark = pytest.mark.integration
D = "inventory"
DELAYS = ("1s", "2s", "4s")


async def test_a_retried_event_comes_back_after_its_delay_in_order_once(
    vhost: Vhost, tmp_path: Path
) -> None:
    spec = topologies.spec_of(topologies.fast_data(DELAYS))
    vhost.apply(spec)
    orders = [order_events(f"ord-{i}") for i in range(20)]
    # Every order's seq 2 fails twice: short tier, then medium; seq 3 waits in the store.
    failing = {str(o[1].event_id) for o in orders}

    def faults(event: AnyEvent, attempts: int) -> None:
        if str(event.event_id) in failing and attempts < 2:
            raise TransientError("injected")

    async with running_workers(vhost.amqp_url, spec, tmp_path, [D], faults=faults) as workers:
        store = workers.workers[0].store
        published = time.time()
        await publish_events(vhost.amqp_url, [e for o in orders for e in o])

        async def whole() -> dict[str, list[int]] | None:
            seqs = by_order(await store.inbox_rows())
            return seqs if len(seqs) == 20 and all(len(s) == 3 for s in seqs.values()) else None

        seqs = await eventually(
            whole,
            within=60,
            what="every order applied",
            always=[workers_in_order(workers), dead_lettered_at_most(workers, 0)],
        )
        assert all(s == [1, 2, 3] for s in seqs.values())
        rows = await store.inbox_rows()
        second = [r for r in rows if r.seq == 2]
        # 1 s (short) + 2 s (medium) before the third attempt could run.
        assert min(r.applied_at_us for r in second) / 1e6 - published >= 3.0
        assert metric(workers, "bus_worker_retried_total", D, tier="short") == 20
        assert metric(workers, "bus_worker_retried_total", D, tier="medium") == 20
        assert metric(workers, "bus_worker_duplicates_total", D) == 0
        assert await store.waiting_rows() == []
        connection = await connect(vhost.amqp_url, "test")
        try:
            tiers = [names.retry_queue(D, t) for t in spec.downstreams[D].retry.tiers]
            assert set((await depths(connection, tiers)).values()) == {0}
        finally:
            await connection.close()
