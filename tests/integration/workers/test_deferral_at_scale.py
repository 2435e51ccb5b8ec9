"""Hundreds of orders whose events arrive in shuffled seq order are each applied 1-2-3, the
early ones waiting in the store (no retry-tier traffic); orders whose first event never comes
are parked once the bound (max_deferrals x the first tier) passes, and apply in order once it
comes and they are redriven."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from events import headers as h
from operations.cli import main
from operations.dlq import DeadLetters
from tests.support import topologies
from tests.support.amqp import publish_events
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.workers import (
    applied_in_order,
    by_order,
    dead_lettered_at_most,
    metric,
    running_workers,
)

pytestmark = pytest.mark.integration
D = "inventory"
ORDERS = 300
MAX_DEFERRALS = 25  # x 200 ms: longer than the whole publish, so only the gaps run out


async def test_shuffled_orders_apply_in_order_and_missing_predecessors_park_at_the_edge(
    vhost: Vhost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, topology_file: Any
) -> None:
    data = topologies.fast_data()
    data["downstreams"][D]["retry"]["max_deferrals"] = MAX_DEFERRALS
    spec = topologies.spec_of(data)
    vhost.apply(spec)
    rng = random.Random(17)
    orders = {f"ord-{i:03d}": order_events(f"ord-{i:03d}") for i in range(ORDERS)}
    gaps = {f"gap-{i}": order_events(f"gap-{i}") for i in range(5)}
    # Every order's events reversed or shuffled, the orders interleaved at random.
    queues = [rng.sample(events, 3) for events in orders.values()]
    queues += [rng.sample(events[1:], 2) for events in gaps.values()]  # seq 1 withheld
    shuffled = []
    while queues:
        queue = rng.choice(queues)
        shuffled.append(queue.pop())
        if not queue:
            queues.remove(queue)
    async with running_workers(vhost.amqp_url, spec, tmp_path, [D]) as workers:
        store = workers.workers[0].store
        await publish_events(vhost.amqp_url, shuffled)

        async def applied() -> dict[str, list[int]] | None:
            seqs = by_order(await store.inbox_rows())
            whole = len(seqs) == ORDERS and all(len(s) == 3 for s in seqs.values())
            return seqs if whole else None

        # Only the gap orders' withheld events may be dead-lettered, two of each.
        holding = [applied_in_order(store), dead_lettered_at_most(workers, 2 * len(gaps))]
        seqs = await eventually(
            applied, within=120, what="every complete order applied", always=holding
        )
        assert all(s == [1, 2, 3] for s in seqs.values())
        assert not set(seqs) & set(gaps)
        assert metric(workers, "bus_worker_deferred_total", D) > 0
        # Deferrals wait in the store: nothing went through a retry tier.
        for tier in spec.downstreams[D].retry.tiers:
            assert metric(workers, "bus_worker_retried_total", D, tier=tier) == 0

        async def parked() -> list[Any] | None:
            async with DeadLetters(vhost.amqp_url, D) as dead:
                healthy = {m.order_id for m in dead.messages} - set(gaps)
                assert not healthy, f"dead letters of healthy orders: {sorted(healthy)}"
                return list(dead.messages) if len(dead.messages) == 2 * len(gaps) else None

        letters = await eventually(parked, within=60, what="the gap orders parked", always=holding)
        for order_id in gaps:
            mine = [m for m in letters if m.order_id == order_id]
            reasons = sorted(m.reason for m in mine)
            # The first of the two to run out of waits parks the order; the other is then
            # blocked behind it (or ran out too, if both got there first).
            assert "predecessor-missing" in reasons, (order_id, reasons)
            assert set(reasons) <= {"predecessor-missing", "blocked-by-predecessor"}
            for m in mine:
                assert h.DEFERRALS not in m.headers, m.headers

        # The first events come at last; the operator redrives what was parked.
        await publish_events(vhost.amqp_url, [events[0] for events in gaps.values()])

        async def first_applied() -> bool:
            seqs = by_order(await store.inbox_rows())
            return all(seqs.get(o) == [1] for o in gaps)

        await eventually(
            first_applied, within=30, what="each gap order's first event applied", always=holding
        )
        vhost.env(monkeypatch)
        assert await asyncio.to_thread(main, ["dlq", "redrive", D]) == 0

        async def whole() -> bool:
            seqs = by_order(await store.inbox_rows())
            return all(seqs.get(o) == [1, 2, 3] for o in gaps)

        await eventually(
            whole, within=30, what="the gap orders applied 1-2-3", always=applied_in_order(store)
        )
        assert await store.waiting_rows() == [], "held events left in the store"
