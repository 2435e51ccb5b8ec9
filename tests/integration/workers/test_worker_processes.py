"""Worker processes: SIGKILL and restart, slow downstream isolation, two copies of one."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.support import topologies
from tests.support.amqp import publish_events
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.processes import free_port, worker_process
from tests.support.shards import sole_consumers
from tests.support.workers import (
    applied_in_order,
    by_order,
    files_in_order,
    inbox_counts,
    inventory_store,
    running_workers,
    workers_in_order,
)
from topology import names
from topology.spec import TopologySpec
from workers.handlers.inventory import InventoryHandler
from workers.store.database import DownstreamStore

pytestmark = pytest.mark.integration


def _fast_topology(vhost: Vhost, topology_file: Any) -> tuple[TopologySpec, Path]:
    """The shipped topology with short retry delays, applied, and its file."""
    data = topologies.fast_data()
    spec = topologies.spec_of(data)
    vhost.apply(spec)
    return spec, topology_file(data)


async def _count(store: DownstreamStore) -> int:
    return len(await store.inbox_rows())


async def test_sigkilled_worker_restarts_with_nothing_lost_or_applied_twice(
    vhost: Vhost, tmp_path: Path, topology_file: Any
) -> None:
    data = topologies.fast_data()
    # Slow enough (at most 8 lanes / 10 ms = 800 events/s) that the kill usually lands
    # while the first half is being applied.
    data["downstreams"]["inventory"] |= {"handler_time": "10ms", "concurrency": 8}
    spec = topologies.spec_of(data)
    vhost.apply(spec)
    path = topology_file(data)
    orders = [order_events(f"ord-{i:04d}") for i in range(1000)]
    first_half, second_half = orders[:500], orders[500:]
    store = await inventory_store(tmp_path, spec)
    try:
        with worker_process(vhost.amqp_url, path, tmp_path, "inventory") as first:
            await publish_events(vhost.amqp_url, [e for o in first_half for e in o])
            await eventually(
                lambda: _over(store, 600),
                what="some events applied",
                always=applied_in_order(store),
            )
            # Frozen, the worker is sent the second half and cannot apply it: the kill lands
            # mid-run however loaded the machine (and however far the first half got).
            first.send_signal(signal.SIGSTOP)
            await publish_events(vhost.amqp_url, [e for o in second_half for e in o])
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        killed_at = await _count(store)
        assert killed_at <= 3 * len(first_half)
        port = free_port()
        with worker_process(
            vhost.amqp_url, path, tmp_path, "inventory", metrics_port=port
        ) as second:
            await eventually(
                lambda: _over(store, 2999),
                within=90,
                what="all applied after restart",
                always=applied_in_order(store),
            )
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            applied = [
                float(line.split()[-1])
                for line in metrics.splitlines()
                if line.startswith('bus_worker_applied_total{downstream="inventory"}')
            ]
            assert applied and 0 < applied[0] <= 3000 - killed_at
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0, "the worker did not stop cleanly on SIGTERM"
        rows = await store.inbox_rows()
        assert len(rows) == 3000
        assert all(s == [1, 2, 3] for s in by_order(rows).values())
        stock = InventoryHandler(spec.downstreams["inventory"]).stock
        [(reserved,)] = await store.query(select(func.sum(stock.c.reserved)))
        # Every created event reserves 3 units; once each, even across the kill.
        assert reserved == 3 * 1000
    finally:
        await store.close()


async def _over(store: DownstreamStore, n: int) -> bool:
    return await _count(store) > n


async def test_a_slow_downstream_delays_only_itself(vhost: Vhost, tmp_path: Path) -> None:
    data = topologies.fast_data()
    data["downstreams"] = {
        "inventory": data["downstreams"]["inventory"],
        "warehouse": {
            **data["downstreams"]["warehouse"],
            "handler_time": "500ms",
            "batch": {"size": 100, "linger": "50ms"},
        },
    }
    spec = topologies.spec_of(data)
    vhost.apply(spec)
    orders = [order_events(f"ord-{i:04d}") for i in range(1000)]
    # The backlog is there before the workers start, so neither is paced by the publisher.
    await publish_events(vhost.amqp_url, [e for o in orders for e in o])
    async with running_workers(vhost.amqp_url, spec, tmp_path) as workers:
        in_order = workers_in_order(workers)
        await eventually(
            lambda: _done(workers, "inventory"), within=60, what="inventory done", always=in_order
        )
        counts = await inbox_counts(workers)
        assert counts["inventory"] == 3000
        # At 100 events per 500 ms the warehouse needs at least 15 s for 3,000; inventory,
        # with nothing to wait for, is done long before (it would have to take 12.5 s, on
        # any machine, for this to fail without the warehouse slowing it).
        assert counts["warehouse"] <= 3000 - 500, f"warehouse kept up ({counts}): proves nothing"
        # The workers export their lag for autoscalers, sampled every 5 s: the warehouse's
        # remaining 2.5 s or more of work span at least one sample after the first, which
        # can land while the prefetched backlog is still on its way to the worker.
        warehouse = {"downstream": "warehouse"}

        async def lagging() -> bool:
            lag = workers.registry.get_sample_value("bus_worker_lag_messages", warehouse)
            return (lag or 0) > 0

        await eventually(lagging, within=15, what="the warehouse's lag exported")
        await eventually(
            lambda: _done(workers, "warehouse"), within=60, what="warehouse done", always=in_order
        )


async def _done(workers: Any, name: str) -> bool:
    return (await inbox_counts(workers))[name] == 3000


async def test_two_processes_split_the_shards_and_the_survivor_takes_over(
    vhost: Vhost, tmp_path: Path, topology_file: Any
) -> None:
    spec, path = _fast_topology(vhost, topology_file)
    shards = [names.shard("inventory", i) for i in range(spec.downstreams["inventory"].shards)]
    store = await inventory_store(tmp_path, spec)
    first_half = [order_events(f"ord-a{i:03d}") for i in range(300)]
    second_half = [order_events(f"ord-b{i:03d}") for i in range(300)]
    try:
        with worker_process(vhost.amqp_url, path, tmp_path, "inventory") as first:
            owners = await eventually(
                lambda: sole_consumers(vhost, shards), what="the first process on every shard"
            )
            assert set(owners.values()) == {first.pid}
            with worker_process(vhost.amqp_url, path, tmp_path, "inventory") as second:
                # The store's leases split the shards; each has one consumer, no standby.
                split = await eventually(
                    lambda: _split(vhost, shards, {first.pid, second.pid}),
                    within=30,
                    what="the shards split between both processes",
                )
                assert sorted(Counter(split.values()).values()) == [2, 2]
                await publish_events(vhost.amqp_url, [e for o in first_half for e in o])
                await eventually(
                    lambda: _over(store, 899),
                    what="first half applied",
                    always=applied_in_order(store),
                )
                first.send_signal(signal.SIGKILL)
                first.wait(10)
                await publish_events(vhost.amqp_url, [e for o in second_half for e in o])
                # The killed process's leases run out; the survivor takes its shards.
                survivor = await eventually(
                    lambda: _split(vhost, shards, {second.pid}),
                    within=30,
                    what="the survivor on every shard",
                )
                assert set(survivor.values()) == {second.pid}
                await eventually(
                    lambda: _over(store, 1799),
                    within=60,
                    what="second process took over",
                    always=applied_in_order(store),
                )
        rows = await store.inbox_rows()
        assert len(rows) == 1800
        assert all(s == [1, 2, 3] for s in by_order(rows).values())
    finally:
        await store.close()


def _split(vhost: Vhost, shards: list[str], pids: set[int]) -> dict[str, int] | None:
    """Each shard's one consumer's pid, once every shard has one and they are all `pids`."""
    owners = sole_consumers(vhost, shards)
    return owners if owners and set(owners.values()) == pids else None


async def test_several_downstreams_run_a_process_each_and_stop_together(
    vhost: Vhost, tmp_path: Path, topology_file: Any
) -> None:
    data = topologies.fast_data()
    spec = topologies.spec_of(data)
    vhost.apply(spec)
    orders = [order_events(f"ord-{i:03d}") for i in range(40)]
    await publish_events(vhost.amqp_url, [e for o in orders for e in o])
    path = topology_file(data)
    with worker_process(vhost.amqp_url, path, tmp_path, "inventory", "loyalty") as proc:
        in_order = files_in_order(tmp_path / "inventory.db", tmp_path / "loyalty.db")
        for d in ("inventory", "loyalty"):
            await eventually(
                lambda d=d: _inbox_file_count(tmp_path / f"{d}.db", 120), what=d, always=in_order
            )
        owners = await eventually(lambda: _worker_connections(vhost), what="both connected")
        # One connection per downstream, each from a process of its own (not the supervisor).
        assert {name.split(":")[1] for name in owners} == {"inventory", "loyalty"}
        assert len({name.split(":")[2] for name in owners}) == 2
        assert str(proc.pid) not in {name.split(":")[2] for name in owners}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


async def _inbox_file_count(path: Path, expected: int) -> bool:
    """Whether a SQLite store's inbox holds exactly `expected` rows."""
    try:
        with sqlite3.connect(path) as db:
            return bool(db.execute("SELECT count(*) FROM inbox").fetchone()[0] == expected)
    except sqlite3.Error:
        return False


async def _worker_connections(vhost: Vhost) -> set[str] | None:
    names = {
        (c.get("client_properties") or {}).get("connection_name", "")
        for c in vhost.client.connections(vhost.name)
    }
    workers = {n for n in names if n.startswith("worker:")}
    return workers if len(workers) == 2 else None


async def test_the_supervisor_restarts_a_sigkilled_child(
    vhost: Vhost, tmp_path: Path, topology_file: Any
) -> None:
    _, path = _fast_topology(vhost, topology_file)
    with worker_process(vhost.amqp_url, path, tmp_path, "inventory", "loyalty") as proc:
        owners = await eventually(lambda: _worker_connections(vhost), what="both connected")
        pids = {name.split(":")[1]: int(name.split(":")[2]) for name in owners}
        os.kill(pids["inventory"], signal.SIGKILL)

        async def replaced() -> dict[str, int] | None:
            now = await _worker_connections(vhost)
            found = {n.split(":")[1]: int(n.split(":")[2]) for n in now or ()}
            return found if found.get("inventory") not in (None, pids["inventory"]) else None

        again = await eventually(replaced, within=60, what="a new inventory process connected")
        assert again["loyalty"] == pids["loyalty"], "the other child was left alone"
        assert proc.poll() is None, "the supervisor keeps running"
        # The new child works: an order published now is applied.
        await publish_events(vhost.amqp_url, order_events("after-restart"))
        await eventually(lambda: _inbox_file_count(tmp_path / "inventory.db", 3), what="applied")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
