"""One node SIGKILLed and left down: deferred and retried events keep flowing.

Workers of two downstreams on the three-node cluster; the node leading the most shards is
killed and left down for over two minutes. Meanwhile, every few seconds, orders whose events
arrive shuffled (some twice) and orders whose seq 2 fails transiently are published: every
event is applied once, in order, within 30 s of its publish, while the node stays down
(3.10's quorum dead-letter worker stalled exactly these until the node returned: issue 25).
Then the node returns and nothing changes.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from broker.connect import connect
from events import AnyEvent, encode
from tests.cluster.test_node_loss import leaders
from tests.support import topologies
from tests.support.amqp import publish_confirmed
from tests.support.cluster import Cluster
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually, violation
from tests.support.workers import (
    by_order,
    dead_lettered_at_most,
    metric,
    running_workers,
    workers_in_order,
)
from workers.api import TransientError

pytestmark = [pytest.mark.cluster, pytest.mark.integration, pytest.mark.timeout(420)]
DOWNSTREAMS = ["inventory", "loyalty"]
DOWN_FOR = 125.0  # seconds the node stays down while orders keep coming
EVERY = 5.0  # seconds between batches
WITHIN = 30.0  # seconds from publish to applied, for every event


async def test_deferrals_and_retries_flow_with_a_node_down(
    cluster: Cluster, cluster_vhost: Vhost, tmp_path: Path
) -> None:
    data = topologies.fast_data()
    for ds in data["downstreams"].values():
        ds["retry"]["max_deferrals"] = 600  # x 200 ms: nothing runs out while the node is down
    spec = topologies.spec_of(data)
    cluster_vhost.apply(spec)
    rng = random.Random(25)
    published: dict[str, float] = {}  # event_id -> first publish (wall clock)
    flaky: set[str] = set()
    orders: list[str] = []

    def faults(event: AnyEvent, attempts: int) -> None:
        if str(event.event_id) in flaky and attempts < 1:
            raise TransientError("injected")

    async def batch(n: int) -> None:
        events: list[AnyEvent] = []
        for i in range(6):  # shuffled, one event of each twice
            evs = order_events(f"shuffled-{n}-{i}")
            mixed = [*rng.sample(evs, 3), rng.choice(evs)]
            rng.shuffle(mixed)
            events += mixed
            orders.append(evs[0].order_id)
        for i in range(4):  # in order, seq 2 fails once
            evs = order_events(f"flaky-{n}-{i}")
            flaky.add(str(evs[1].event_id))
            events += evs
            orders.append(evs[0].order_id)
        now = time.time()
        for e in events:
            published.setdefault(str(e.event_id), now)
        # The cluster's URL lists every node: the bus's own connect tries each in turn.
        connection = await connect(cluster_vhost.amqp_url, "test")
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await publish_confirmed(
                channel, "orders", [(e.event_type.value, encode(e)) for e in events]
            )

    async with running_workers(
        cluster_vhost.amqp_url, spec, tmp_path, DOWNSTREAMS, faults=faults
    ) as workers:
        stores = [w.store for w in workers.workers]
        holding = [workers_in_order(workers), dead_lettered_at_most(workers, 0)]

        async def complete() -> bool:
            for store in stores:
                seqs = by_order(await store.inbox_rows())
                if any(len(seqs.get(o, [])) != 3 for o in orders):
                    return False
            return True

        await batch(0)
        await eventually(complete, within=60, what="the first batch applied", always=holding)
        victim = leaders(cluster_vhost, spec).most_common(1)[0][0]
        number = cluster.number(victim)
        await cluster.act(number, "kill")
        killed = time.monotonic()
        n = 1
        while time.monotonic() - killed < DOWN_FOR:
            await batch(n)
            n += 1
            await asyncio.sleep(EVERY)
            assert await violation(holding) is None
        await eventually(
            complete, within=WITHIN, what="every order applied, node down", always=holding
        )
        assert time.monotonic() - killed >= DOWN_FOR, "the node was not down long enough"
        late: list[tuple[str, float]] = []
        for store in stores:
            rows = await store.inbox_rows()
            assert all(s == [1, 2, 3] for s in by_order(rows).values())
            assert len({r.event_id for r in rows}) == len(rows) == 3 * len(orders)
            late += [
                (r.event_id, took)
                for r in rows
                if (took := r.applied_at_us / 1e6 - published[r.event_id]) > WITHIN
            ]
            assert await store.waiting_rows() == []
        assert not late, f"applied later than {WITHIN}s after publish: {late[:5]}"
        for d in DOWNSTREAMS:
            assert metric(workers, "bus_worker_deferred_total", d) > 0
            assert metric(workers, "bus_worker_retry_forwarded_total", d) >= 4 * (n - 1)
        before = {w.name: len(await w.store.inbox_rows()) for w in workers.workers}

        await cluster.act(number, "start")
        await asyncio.sleep(15)
        after = {w.name: len(await w.store.inbox_rows()) for w in workers.workers}
        assert after == before, "the node's return changed what was applied"
        assert await violation(holding) is None
    print(f"\nnode down {DOWN_FOR:.0f}s ({victim}): {len(orders)} orders applied in time")
