"""Handlers that hang, are slow and then fail, or fail until their retries run out, on a
shard other orders share: the hung call is cut at the file's handler_timeout and retried,
each troubled order ends applied in order or parked with its reason, and the other orders on
that shard keep a bounded latency: within a few handler timeouts of a control group of
orders on the other shard, which the machine's load slows as much but the trouble does not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path

import pytest

from bench.ring import ring
from events import AnyEvent
from operations.dlq import DeadLetters
from tests.support import topologies
from tests.support.amqp import publish_events
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.workers import applied_in_order, by_order, metric, running_workers
from workers.api import TransientError

# A watchdog that never fires fails this in seconds (HUNG_CUT_WITHIN), never hangs the run.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]
D = "inventory"
TIMEOUT = 0.5  # the file's handler_timeout here
HUNG_CUT_WITHIN = 20.0  # the hung order applied after its cut (a watchdog that never fires)
OTHERS = 80
# The other orders on the troubled shard: their p99 time from publish to their last event
# applied, over the control group's on the other shard. Unbounded without the timeout for
# the hung order only; for the others it must stay within a few handler timeouts whatever
# the troubled orders do.
OTHERS_P99_OVER_CONTROL = 6 * TIMEOUT
TROUBLED, CONTROL = 0, 1  # the shards


async def _placed(amqp_url: str) -> tuple[dict[str, str], list[str], list[str]]:
    """Order ids for the troubled orders and the others on the troubled shard, and for the
    control group on the other shard (the broker's own ring says where each goes)."""
    troubles = ("hang", "slow-fail", "exhaust")
    candidates = [f"ord-{t}-{k}" for t in troubles for k in range(40)]
    candidates += [f"ord-{i:03d}" for i in range(8 * OTHERS)]
    shard = await ring(amqp_url, candidates, [TROUBLED, CONTROL])
    troubled = {
        t: next(o for o in candidates if o.startswith(f"ord-{t}-") and shard[o] == TROUBLED)
        for t in troubles
    }
    plain = [o for o in candidates if o.count("-") == 1]
    others = [o for o in plain if shard[o] == TROUBLED][:OTHERS]
    control = [o for o in plain if shard[o] == CONTROL][:OTHERS]
    assert len(others) == len(control) == OTHERS
    return troubled, others, control


async def test_hung_slow_and_exhausted_handlers_delay_only_their_own_orders(
    vhost: Vhost, tmp_path: Path
) -> None:
    data = topologies.fast_data()
    inventory = data["downstreams"][D]
    inventory.update(shards=2, handler_timeout=f"{int(TIMEOUT * 1000)}ms")
    inventory["retry"]["max_attempts"] = 3
    spec = topologies.spec_of(data)
    vhost.apply(spec)
    hung_for_ever = asyncio.Event()  # never set
    ids, others, control = await _placed(vhost.amqp_url)
    hang, slow_fail, exhaust = ids["hang"], ids["slow-fail"], ids["exhaust"]

    def faults(event: AnyEvent, attempts: int) -> Awaitable[None] | None:
        if event.seq != 1:
            return None
        if event.order_id == hang and attempts == 0:
            return hung_for_ever.wait()
        if event.order_id == slow_fail and attempts == 0:
            return _slow_then_fail(TIMEOUT * 0.6)
        if event.order_id == exhaust:
            raise TransientError("the price service is down")
        return None

    troubled = [order_events(o) for o in (hang, slow_fail, exhaust)]
    # The troubled orders first: their events are at the head of their shard. The others
    # and the control group alternate, so neither is published ahead of the other.
    pairs = [order_events(o) for pair in zip(others, control, strict=True) for o in pair]
    events = [e for o in [*troubled, *pairs] for e in o]
    async with running_workers(vhost.amqp_url, spec, tmp_path, [D], faults) as workers:
        store = workers.workers[0].store
        started = time.time()
        await publish_events(vhost.amqp_url, events)

        async def applied(*orders: str) -> bool:
            seqs = by_order(await store.inbox_rows())
            return all(seqs.get(o) == [1, 2, 3] for o in orders)

        await eventually(
            lambda: applied(hang),
            within=HUNG_CUT_WITHIN,
            what=f"the hung order applied once its {TIMEOUT:g}s handler_timeout cut the call",
            always=applied_in_order(store),
        )

        async def settled() -> bool:
            done = await applied(*others, *control, hang, slow_fail)
            return done and exhaust not in by_order(await store.inbox_rows())

        await eventually(
            settled,
            within=60,
            what="every order applied but the exhausted one",
            always=applied_in_order(store),
        )

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
    p50, p99 = _percentiles([last_applied[o] for o in others])
    control_p50, control_p99 = _percentiles([last_applied[o] for o in control])
    print(
        f"\nothers on the troubled shard: p50 {p50:.3f}s, p99 {p99:.3f}s; the control group "
        f"on the other shard: p50 {control_p50:.3f}s, p99 {control_p99:.3f}s"
    )
    assert p99 <= control_p99 + OTHERS_P99_OVER_CONTROL, (p99, control_p99)
    # The hung call was cut at the timeout, not before; then retried and applied.
    assert last_applied[hang] >= TIMEOUT
    # Each troubled order's first attempt went to the first tier: hang, slow-fail, exhaust.
    assert retried >= 3


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    """p50 and p99."""
    ordered = sorted(latencies)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99) - 1]


async def _slow_then_fail(seconds: float) -> None:
    await asyncio.sleep(seconds)
    raise TransientError("the stock service answered late, with an error")
