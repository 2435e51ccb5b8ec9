"""Shards changing hands between the processes of one downstream while orders flow, on one
PostgreSQL store.

- A process paused past its lease (SIGSTOP) finds, once it runs again, that another took its
  shards: it stops consuming them at once, and no event is applied twice or out of order.
- A voluntary hand-over (a process joining, a graceful stop, a reshard) is finished by the
  old owner before the new one starts: what it was given is applied and acked, so nothing
  it handled comes back to the next owner. No process meets a duplicate
  (`bus_worker_duplicates_total` stays 0 in every process).

Why duplicates and not `bus_worker_redelivered_total`: a quorum queue marks redelivered
every message it had assigned to a consumer whose channel closed, sent or not. Under load it
can hold some assigned to the old owner past the wind-down, never sending them (worker debug
logs show the new owner's redelivered deliveries absent from the old owner's log, and
applied once, first by the new owner). Those are redelivered but never handled twice; what
a hand-over that does not finish its work hands on is (`redelivered` shown on failure).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from operations.cli import main
from tests.support import topologies
from tests.support.amqp import SteadyOrders
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.processes import free_port, worker_process
from tests.support.producer import postgres_database
from tests.support.shards import (
    lease_holders,
    scraped,
    shard_consumers,
    shards_of,
    sole_consumers,
    split_over,
)
from tests.support.workers import applied_in_order, by_order
from topology import names
from topology.spec import TopologySpec
from workers.handlers.inventory import InventoryHandler
from workers.ownership.coordinator import LEASE_TTL, ROUND_SECONDS
from workers.store.database import DownstreamStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
D = "inventory"
# How soon a process that runs again must see that it lost its leases and stop consuming
# them: a round or two (a process that ignores it never does).
GIVES_UP_WITHIN = 3 * ROUND_SECONDS + 5
HANDLER_TIME = "200ms"  # of the hand-over test: every shard given up holds deliveries in flight
COUNTERS = (
    "bus_worker_redelivered_total",
    "bus_worker_duplicates_total",
    "bus_worker_applied_total",
    "bus_worker_shards_owned",
)


@dataclass
class Downstream:
    """Inventory's worker processes on one PostgreSQL store, and the orders flowing to it."""

    vhost: Vhost
    spec: TopologySpec
    topology: Path
    store: DownstreamStore
    dsn: str
    tmp_path: Path
    procs: ExitStack
    flow: SteadyOrders
    ports: dict[int, int] = field(default_factory=dict)  # pid: metrics port
    last: dict[int, dict[str, float]] = field(default_factory=dict)  # pid: last scrape

    @property
    def shards(self) -> list[str]:
        return [names.shard(D, i) for i in range(self.spec.downstreams[D].shards)]

    def start(self) -> subprocess.Popen[bytes]:
        """One more worker process of the downstream, with its own metrics port."""
        port = free_port()
        proc = self.procs.enter_context(
            worker_process(
                self.vhost.amqp_url,
                self.topology,
                self.tmp_path,
                D,
                metrics_port=port,
                dsn=self.dsn,
            )
        )
        self.ports[proc.pid] = port
        return proc

    def counters(self, pid: int) -> dict[str, float]:
        """A process's counters now (kept as its last figures)."""
        self.last[pid] = scraped(self.ports[pid], *COUNTERS)
        return self.last[pid]

    async def split(self, *procs: subprocess.Popen[bytes], shards: int | None = None) -> Any:
        """Wait until these processes hold every shard's lease between them, each some."""
        pids = {p.pid for p in procs}
        count = shards or len(self.shards)
        return await eventually(
            lambda: split_over(self.store, pids, count),
            within=60,
            what=f"the {count} shards split over processes {sorted(pids)}",
            always=applied_in_order(self.store),
        )

    async def applied(self) -> int:
        return len(await self.store.inbox_rows())


@asynccontextmanager
async def inventory(
    vhost: Vhost,
    tmp_path: Path,
    topology_file: Any,
    flow: SteadyOrders,
    handler_time: str,
) -> AsyncIterator[tuple[Downstream, Callable[[], Any]]]:
    """Inventory applied, its store open, and a steady flow of orders started; yields the
    downstream and a function that ends the flow and waits until every order is applied."""
    data = topologies.fast_data()
    data["downstreams"] = {D: {**data["downstreams"][D], "handler_time": handler_time}}
    spec = topologies.spec_of(data)
    vhost.apply(spec)
    async with postgres_database() as dsn:
        handler = InventoryHandler(spec.downstreams[D])
        store = await DownstreamStore.open(D, handler.metadata, dsn, tmp_path, handler.revisions)
        stop = asyncio.Event()
        flowing = asyncio.create_task(flow.run(stop))
        try:
            with ExitStack() as procs:
                downstream = Downstream(
                    vhost, spec, topology_file(data), store, dsn, tmp_path, procs, flow
                )

                async def finish() -> None:
                    stop.set()
                    await asyncio.wait_for(flowing, 30)

                    async def all_applied() -> bool:
                        return await downstream.applied() >= flow.events

                    await eventually(
                        all_applied,
                        within=90,
                        what=f"every one of the {flow.events} events applied",
                        always=applied_in_order(store),
                    )

                yield downstream, finish
        finally:
            stop.set()
            flowing.cancel()
            await store.close()


async def _check_the_store(downstream: Downstream) -> None:
    """Every order applied once, in seq order, and its stock reserved once."""
    rows = await downstream.store.inbox_rows()
    orders = by_order(rows)
    assert len(rows) == downstream.flow.events
    assert all(seqs == [1, 2, 3] for seqs in orders.values())
    stock = downstream.store.metadata.tables["stock"]
    [(reserved,)] = await downstream.store.query(select(func.sum(stock.c.reserved)))
    # order_events: 2 x SKU-1 and 1 x SKU-2 reserved per order, once.
    assert reserved == 3 * len(downstream.flow.orders), "a reservation lost or made twice"


async def _pause_until_taken_over(
    downstream: Downstream, paused: subprocess.Popen[bytes], other: subprocess.Popen[bytes]
) -> None:
    """SIGSTOP `paused` until its leases run out and `other` takes every shard; SIGCONT.

    Stopped inside its heartbeat's transaction, it would hold its lease rows locked, and the
    other could take nothing until it ran again: then it is let run a moment and paused again.
    """
    for attempt in range(3):
        os.kill(paused.pid, signal.SIGSTOP)
        try:
            await eventually(
                lambda: split_over(downstream.store, {other.pid}, len(downstream.shards)),
                within=LEASE_TTL + 10,
                what="the other process taking the paused one's shards",
            )
            return
        except AssertionError:
            if attempt == 2:
                raise
        finally:
            os.kill(paused.pid, signal.SIGCONT)
        await asyncio.sleep(2 * ROUND_SECONDS)


@pytest.mark.timeout(180)
async def test_a_process_paused_past_its_lease_gives_its_shards_up_at_once(
    vhost: Vhost, tmp_path: Path, topology_file: Any
) -> None:
    # Orders with stock of their own: the paused process, stopped in the middle of a commit,
    # holds no row lock the other process's commits (and its lease rounds) would wait on.
    flow = SteadyOrders(vhost.amqp_url, per_second=40, own_stock=True)
    flowing = inventory(vhost, tmp_path, topology_file, flow, handler_time="5ms")
    async with flowing as (downstream, finish):
        paused, other = downstream.start(), downstream.start()
        split = await downstream.split(paused, other)
        held = shards_of(split, paused.pid)
        await eventually(lambda: downstream.counters(paused.pid)["bus_worker_applied_total"] > 0)
        await _pause_until_taken_over(downstream, paused, other)
        resumed = time.monotonic()

        async def consumes_only_its_leases() -> bool:
            holds = shards_of(await lease_holders(downstream.store), paused.pid)
            return downstream.counters(paused.pid)["bus_worker_shards_owned"] == len(holds)

        try:
            await eventually(consumes_only_its_leases, within=GIVES_UP_WITHIN, every=0.1)
        except AssertionError:
            owned = downstream.last[paused.pid]["bus_worker_shards_owned"]
            raise AssertionError(
                f"the resumed process still consumes {owned:.0f} shard(s) {GIVES_UP_WITHIN}s "
                f"after running again, though it lost the leases of {sorted(held)}"
            ) from None
        gave_up = time.monotonic() - resumed
        # The broker agrees: one consumer per shard, the one of its lease's holder (the
        # management API's statistics lag by a few seconds).

        async def consumers_are_the_holders() -> dict[str, int] | None:
            holders = await lease_holders(downstream.store)
            consumers = sole_consumers(downstream.vhost, downstream.shards)
            by_index = {names.shard(D, i): pid for i, pid in holders.items()}
            return consumers if consumers == by_index else None

        try:
            await eventually(consumers_are_the_holders, within=30, every=0.5)
        except AssertionError:
            seen = shard_consumers(downstream.vhost, downstream.shards)
            raise AssertionError(
                f"a shard is still consumed by a process without its lease: consumers (pid, "
                f"active) {seen}, leases {await lease_holders(downstream.store)}"
            ) from None
        await finish()
        counters = [downstream.counters(p.pid) for p in (paused, other)]
        # No event was applied by both: each process counts what it applied itself.
        assert sum(c["bus_worker_applied_total"] for c in counters) == downstream.flow.events
        await _check_the_store(downstream)
    print(f"\npaused past its lease: shards {sorted(held)} given up {gave_up:.1f}s after resuming")


@pytest.mark.timeout(240)
async def test_voluntary_hand_overs_hand_on_nothing_handled(
    vhost: Vhost, tmp_path: Path, topology_file: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = SteadyOrders(vhost.amqp_url, per_second=60, tick=0.05)
    flowing = inventory(vhost, tmp_path, topology_file, flow, handler_time=HANDLER_TIME)
    async with flowing as (downstream, finish):
        steps: list[str] = []
        first = downstream.start()
        await downstream.split(first)
        second = downstream.start()
        await downstream.split(first, second)
        steps.append("a second process joined")
        downstream.counters(first.pid)
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0, "the first process did not stop cleanly on SIGTERM"
        await downstream.split(second)
        steps.append("the first stopped gracefully")
        third = downstream.start()
        await downstream.split(second, third)
        steps.append("a third process joined")
        data = topologies.fast_data()
        grown = {"handler_time": HANDLER_TIME, "shards": 6}
        data["downstreams"] = {D: {**data["downstreams"][D], **grown}}
        vhost.env(monkeypatch)
        path = topology_file(data, "six.yaml")
        assert await asyncio.to_thread(main, ["--file", str(path), "apply"]) == 0
        await downstream.split(second, third, shards=6)
        steps.append("inventory grew from 4 shards to 6")
        await finish()
        for proc in (second, third):
            downstream.counters(proc.pid)
        figures = {
            pid: {
                "duplicates": f["bus_worker_duplicates_total"],
                "redelivered": f["bus_worker_redelivered_total"],
            }
            for pid, f in downstream.last.items()
        }
        assert not any(f["duplicates"] for f in figures.values()), (
            f"events handled twice (per process pid) across {', '.join(steps)}: {figures}; "
            "a hand-over did not finish and ack what it held before the next owner started"
        )
        await _check_the_store(downstream)
