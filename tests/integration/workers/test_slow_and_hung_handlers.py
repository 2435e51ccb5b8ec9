"""Handlers that hang, are slow and then fail, or fail until their retries run out, on the
one shard every order shares: the hung call is cut at the file's handler_timeout and retried,
each troubled order ends applied in order or parked with its reason, and the other orders on
that shard keep a bounded latency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path

import pytest

from events import AnyEvent
from operations.dlq import DeadLetters
from tests.support import topologies
from tests.support.amqp import publish_events
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.workers import by_order, metric, running_workers
from workers.api import TransientError

pytestmark = pytest.mark.integration
D = "inventory"
TIMEOUT = 0.5  # the file's handler_timeout here
OTHERS = 80
# The other orders on the shard: their p99 time from publish to their last event applied.
# Unbounded without the timeout for the hung order only; for the others it must stay within
# a few handler timeouts whatever the troubled orders do.
OTHERS_P99_BOUND = 6 * TIMEOUT


async def test_hung_slow_and_exhausted_handlers_delay_only_their_own_orders(
    vhost: Vhost, tmp_path: Path
) -> None:
    data = topologies.fast_data()
    inventory = data["downstreams"][D]
    inventory.update(shards=1, handler_timeout=f"{int(TIMEOUT * 1000)}ms")
    inventory["retry"]["max_attempts"] = 3
    spec = topologies.spec_of(data)
    vhost.apply(spec)
    hung_for_ever = asyncio.Event()  # never set

    def faults(event: AnyEvent, attempts: int) -> Awaitable[None] | None:
        if event.seq != 1:
            return None
        if event.order_id == "ord-hang" and attempts == 0:
            return hung_for_ever.wait()
        if event.order_id == "ord-slow-fail" and attempts == 0:
            return _slow_then_fail(TIMEOUT * 0.6)
        if event.order_id == "ord-exhaust":
            raise TransientError("the price service is down")
        return None

    troubled = {o: order_events(o) for o in ("ord-hang", "ord-slow-fail", "ord-exhaust")}
    others = {f"ord-{i:03d}": order_events(f"ord-{i:03d}") for i in range(OTHERS)}
    # The troubled orders first: their events are at the head of the shard.
    events = [e for o in [*troubled.values(), *others.values()] for e in o]
    async with running_workers(vhost.amqp_url, spec, tmp_path, [D], faults) as workers:
        store = workers.workers[0].store
        started = time.time()
        await publish_events(vhost.amqp_url, events)

        async def settled() -> bool:
            applied = by_order(await store.inbox_rows())
            done = all(applied.get(o) == [1, 2, 3] for o in [*others, "ord-hang", "ord-slow-fail"])
            return done and "ord-exhaust" not in applied

        await eventually(settled, within=60, what="every order applied but the exhausted one")

        async def parked() -> list[tuple[int, str]] | None:
            async with DeadLetters(vhost.amqp_url, D) as dead:
                found = sorted((m.seq, m.reason) for m in dead.messages)
            return found if len(found) == 3 else None

        letters = await eventually(parked, within=30, what="the exhausted order parked")
        assert letters == [
            (1, "retries-exhausted"),
            (2, "blocked-by-predecessor"),
            (3, "blocked-by-predecessor"),
        ]
        rows = await store.inbox_rows()
        retried = metric(workers, "bus_worker_retried_total", D, tier="short")
    last_applied = {}
    for row in rows:
        last_applied[row.order_id] = row.applied_at_us / 1e6 - started
    latencies = sorted(last_applied[o] for o in others)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(f"\nothers on the shard: p50 {latencies[len(latencies) // 2]:.3f}s, p99 {p99:.3f}s")
    assert p99 <= OTHERS_P99_BOUND, (p99, OTHERS_P99_BOUND)
    # The hung call was cut at the timeout, not before; then retried and applied.
    assert last_applied["ord-hang"] >= TIMEOUT
    # Each troubled order's first attempt went to the first tier: hang, slow-fail, exhaust.
    assert retried >= 3


async def _slow_then_fail(seconds: float) -> None:
    await asyncio.sleep(seconds)
    raise TransientError("the stock service answered late, with an error")
