"""Several processes of one downstream on one PostgreSQL store: the shards split, a killed
process's shards are taken over, a newcomer takes its share, and nothing is applied twice,
out of order, or by two processes at once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from tests.support import topologies
from tests.support.amqp import publish_events
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.processes import worker_process
from tests.support.producer import postgres_database
from tests.support.shards import member_pid, split_over
from tests.support.workers import applied_in_order, by_order
from topology import names
from workers.handlers.inventory import InventoryHandler
from workers.store.database import DownstreamStore

pytestmark = pytest.mark.integration
ORDERS = 1500


async def _lease_log(store: DownstreamStore) -> list[Any]:
    table = store.metadata.tables["shard_lease_log"]
    return await store.query(table.select().order_by(table.c.shard, table.c.epoch))


class Consumers:
    """Samples every shard's consumers on the broker while the test runs."""

    def __init__(self, vhost: Vhost, shards: list[str]) -> None:
        self.vhost, self.shards = vhost, shards
        self.most = 0  # the most consumers any shard had at one sample
        self.samples = 0

    async def watch(self, until: asyncio.Event) -> None:
        while not until.is_set():
            for shard in self.shards:
                queue = self.vhost.client.queue(self.vhost.name, shard) or {}
                self.most = max(self.most, int(queue.get("consumers") or 0))
            self.samples += 1
            await asyncio.sleep(0.5)


async def test_three_processes_share_a_downstream_through_a_kill_and_a_join(
    vhost: Vhost, tmp_path: Path, topology_file: Any
) -> None:
    data = topologies.fast_data()
    data["downstreams"] = {"inventory": {**data["downstreams"]["inventory"], "handler_time": "2ms"}}
    spec = topologies.spec_of(data)
    vhost.apply(spec)
    path = topology_file(data)
    shards = [names.shard("inventory", i) for i in range(spec.downstreams["inventory"].shards)]
    orders = [order_events(f"so-{i:05d}") for i in range(ORDERS)]
    async with postgres_database() as dsn:
        handler = InventoryHandler(spec.downstreams["inventory"])
        store = await DownstreamStore.open(
            "inventory", handler.metadata, dsn, tmp_path, handler.revisions
        )
        with ExitStack() as procs:

            def start() -> subprocess.Popen[bytes]:
                return procs.enter_context(
                    worker_process(vhost.amqp_url, path, tmp_path, "inventory", dsn=dsn)
                )

            first, second, third = start(), start(), start()
            split = await eventually(
                lambda: split_over(store, {first.pid, second.pid, third.pid}, len(shards)),
                within=30,
                what="the shards split over three processes",
            )
            assert sorted(Counter(split.values()).values()) == [1, 1, 2]
            done = asyncio.Event()
            consumers = Consumers(vhost, shards)
            watcher = asyncio.create_task(consumers.watch(done))
            thirds = [orders[i::3] for i in range(3)]
            await publish_events(vhost.amqp_url, [e for o in thirds[0] for e in o])
            second.send_signal(signal.SIGKILL)
            second.wait(10)
            killed_at = time.time()
            await publish_events(vhost.amqp_url, [e for o in thirds[1] for e in o])
            fourth = start()
            await publish_events(vhost.amqp_url, [e for o in thirds[2] for e in o])

            async def all_applied() -> bool:
                return len(await store.inbox_rows()) >= 3 * ORDERS

            await eventually(
                all_applied,
                within=120,
                what="every event applied",
                always=applied_in_order(store),
            )
            final = await eventually(
                lambda: split_over(store, {first.pid, third.pid, fourth.pid}, len(shards)),
                within=30,
                what="the newcomer holding its share",
            )
            done.set()
            await watcher
        rows = await store.inbox_rows()
        log = await _lease_log(store)
        stock = store.metadata.tables["stock"]
        reserved = dict(
            await store.query(stock.select().with_only_columns(stock.c.sku, stock.c.reserved))
        )
        await store.close()
    assert len(rows) == 3 * ORDERS
    assert all(seqs == [1, 2, 3] for seqs in by_order(rows).values())
    # Three processes updating the same stock rows concurrently lost no reservation: every
    # order reserves 2 x SKU-1 and 1 x SKU-2, once.
    assert reserved == {"SKU-1": 2 * ORDERS, "SKU-2": ORDERS}
    assert sorted(Counter(final.values()).values()) == [1, 1, 2]
    assert consumers.samples > 3 and consumers.most <= 1, "a shard had two consumers"
    _no_overlapping_leases(log, killed_pid=second.pid, killed_at_ms=killed_at * 1000)
    orphaned = {r.shard for r in log if member_pid(r.owner) == second.pid}
    taken = [
        r.acquired_at_ms for r in log if r.shard in orphaned and r.acquired_at_ms > killed_at * 1000
    ]
    print(
        f"\nscale-out: the killed process's shards {sorted(orphaned)} taken over "
        f"{(max(taken) / 1000 - killed_at):.1f}s after the kill; "
        f"{len(log)} leases in all; at most {consumers.most} consumer per shard "
        f"over {consumers.samples} samples"
    )


def _no_overlapping_leases(log: list[Any], killed_pid: int, killed_at_ms: float) -> None:
    """Per shard, each lease starts after the one before it ended (given up, or, for the
    killed process, after it died and its lease ran out)."""
    by_shard: defaultdict[int, list[Any]] = defaultdict(list)
    for row in log:
        by_shard[row.shard].append(row)
    for shard, leases in by_shard.items():
        for before, after in pairwise(leases):
            if before.released_at_ms is not None:
                assert after.acquired_at_ms >= before.released_at_ms, (shard, before, after)
            else:
                assert member_pid(before.owner) == killed_pid, (shard, before, "never released")
                assert after.acquired_at_ms >= killed_at_ms, (shard, before, after)
