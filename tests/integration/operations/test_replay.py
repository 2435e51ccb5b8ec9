"""`python -m topology replay`: one downstream only, idempotent, and rebuilding a wiped store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from operations.cli import main
from tests.support.amqp import publish_events
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.workers import metric, running_workers
from topology.spec import TopologySpec
from workers.process.app import Workers
from workers.session.worker import DownstreamWorker

pytestmark = pytest.mark.integration
EVENTS = 90  # 30 orders


@dataclass
class Applied:
    """inventory and loyalty running, each having applied the same 30 orders."""

    workers: Workers
    inventory: DownstreamWorker
    original: tuple[Any, Any]
    capsys: pytest.CaptureFixture[str]

    async def replay(self, *args: str) -> int:
        """`python -m topology replay inventory --since 10m ...`; output stays in capsys."""
        self.capsys.readouterr()
        return await asyncio.to_thread(main, ["replay", "inventory", "--since", "10m", *args])

    def consumed(self, downstream: str) -> float:
        """Deliveries the downstream received so far."""
        return metric(self.workers, "bus_worker_consumed_total", downstream)

    async def settled(self, consumed: float) -> bool:
        """Whether inventory received `consumed` deliveries and holds none unsettled."""
        held = metric(self.workers, "bus_worker_in_flight", "inventory")
        return self.consumed("inventory") >= consumed and held == 0


async def _snapshot(worker: DownstreamWorker) -> tuple[Any, Any]:
    inbox = {(r.event_id, r.order_id, r.seq) for r in await worker.store.inbox_rows()}
    stock = worker.handler.stock  # type: ignore[attr-defined]
    return inbox, sorted(await worker.store.query(select(stock)))


@pytest.fixture
async def applied(
    vhost: Vhost,
    fast_spec: TopologySpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> AsyncIterator[Applied]:
    vhost.apply(fast_spec)
    vhost.env(monkeypatch)
    names = ["inventory", "loyalty"]
    async with running_workers(vhost.amqp_url, fast_spec, tmp_path, names) as workers:
        events = [e for i in range(30) for e in order_events(f"o-{i:02d}")]
        await publish_events(vhost.amqp_url, events)

        async def both() -> bool:
            return all([len(await w.store.inbox_rows()) == EVENTS for w in workers.workers])

        await eventually(both, what="both applied")
        inventory = workers.workers[0]
        yield Applied(workers, inventory, await _snapshot(inventory), capsys)


async def test_a_replay_reaches_one_downstream_and_applies_nothing_twice(applied: Applied) -> None:
    loyalty_before = applied.consumed("loyalty")
    inventory_before = applied.consumed("inventory")
    assert await applied.replay() == 0
    assert f"replayed {EVENTS} event(s) to inventory" in applied.capsys.readouterr().out

    def recognised() -> bool:
        return metric(applied.workers, "bus_worker_duplicates_total", "inventory") >= EVENTS

    await eventually(recognised, what="every replayed event recognised")
    await eventually(lambda: applied.settled(inventory_before + EVENTS), what="settled")
    assert await _snapshot(applied.inventory) == applied.original
    assert applied.consumed("loyalty") == loyalty_before


async def test_reapply_rebuilds_a_store_wiped_under_a_running_worker(applied: Applied) -> None:
    store, handler = applied.inventory.store, applied.inventory.handler

    def wipe() -> None:
        with store.engine.begin() as conn:
            for table in (store.inbox, store.progress, handler.stock):  # type: ignore[attr-defined]
                conn.execute(delete(table))

    await store.run(wipe)
    before = applied.consumed("inventory")
    assert await applied.replay("--reapply") == 0
    await eventually(lambda: applied.settled(before + EVENTS), what="every replayed event settled")
    assert await _snapshot(applied.inventory) == applied.original
    assert metric(applied.workers, "bus_worker_applied_total", "inventory") == 2 * EVENTS

    def all_acked() -> bool:
        acked = metric(applied.workers, "bus_worker_acked_total", "inventory")
        return acked == applied.consumed("inventory") == 2 * EVENTS

    await eventually(all_acked, what="every delivery counted as acked once")


async def test_a_replay_of_one_order_and_a_bad_time(applied: Applied) -> None:
    before = applied.consumed("inventory")
    duplicates = metric(applied.workers, "bus_worker_duplicates_total", "inventory")
    assert await applied.replay("--order-id", "o-07") == 0
    assert "replayed 3 event(s)" in applied.capsys.readouterr().out
    # o-07's three events, and nothing else, reached inventory and were recognised as applied.
    await eventually(lambda: applied.settled(before + 3), what="o-07's replay settled")
    assert applied.consumed("inventory") == before + 3
    assert metric(applied.workers, "bus_worker_duplicates_total", "inventory") == duplicates + 3
    assert await _snapshot(applied.inventory) == applied.original
    code = await asyncio.to_thread(main, ["replay", "inventory", "--since", "yesterday"])
    assert code == 1
    assert "neither a time" in applied.capsys.readouterr().err


async def test_replay_without_until_stops_at_now_on_a_busy_bus(
    vhost: Vhost,
    fast_spec: TopologySpec,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    vhost.apply(fast_spec)
    vhost.env(monkeypatch)
    await publish_events(vhost.amqp_url, [e for i in range(10) for e in order_events(f"o-{i}")])
    live, stop = asyncio.Event(), asyncio.Event()
    published = [0]  # live events confirmed so far

    async def keep_publishing() -> None:
        # Stopped by an event, not cancelled: a publish cancelled inside its connection's
        # close can leave a task the event loop's teardown then waits on for ever.
        while not stop.is_set():
            published[0] += await publish_events(
                vhost.amqp_url, order_events(f"live-{published[0]}")
            )
            live.set()
            await asyncio.sleep(0.05)

    publisher = asyncio.create_task(keep_publishing())
    try:
        await live.wait()
        at_start = published[0]
        # Before --until defaulted to now, the replay kept re-feeding the live events and
        # never went idle long enough to stop.
        code = await asyncio.wait_for(
            asyncio.to_thread(main, ["replay", "inventory", "--since", "10m"]), timeout=60
        )
    finally:
        stop.set()
        await asyncio.wait_for(publisher, timeout=30)
    assert code == 0
    out = capsys.readouterr().out
    assert " until " in out
    replayed = int(out.split("replayed ")[1].split(" ")[0])
    # everything up to the start, and no more than what was published while it read
    assert 30 + at_start <= replayed <= 30 + published[0], out
