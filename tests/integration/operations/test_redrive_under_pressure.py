"""Redrive when it is hard: before the fix ships, while the order's next event arrives, and
for hundreds of dead letters of many orders with crash-duplicated copies among them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select

from events import AnyEvent
from operations.cli import main
from operations.dlq import DeadLetters, DeadMessage
from tests.support.amqp import dead_letter, depth, publish_events, publish_to
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.workers import by_order, metric, running_workers
from topology import names
from topology.spec import TopologySpec
from workers.api import NonRetryableError
from workers.process.app import Workers

pytestmark = pytest.mark.integration
D = "inventory"
DLQ = names.dlq(D)


@dataclass
class Bus:
    """inventory's worker, whose created events of `broken` orders fail for good."""

    vhost: Vhost
    workers: Workers
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]
    broken: set[str] = field(default_factory=set)

    async def cli(self, *args: str) -> int:
        """`python -m topology ...` against this vhost; the output stays in capsys."""
        self.vhost.env(self.monkeypatch)
        self.capsys.readouterr()
        return await asyncio.to_thread(main, list(args))

    async def applied(self) -> dict[str, list[int]]:
        """Each order's applied seqs, in the order they were applied."""
        return by_order(await self.workers.workers[0].store.inbox_rows())

    async def dead(self) -> list[dict[str, object]]:
        """`dlq list --json --limit 0` rows."""
        assert await self.cli("dlq", "list", D, "--json", "--limit", "0") == 0
        rows: list[dict[str, object]] = json.loads(self.capsys.readouterr().out)
        return rows

    async def dlq_holds(self, n: int) -> bool:
        """Whether the DLQ has n ready messages."""
        return await depth(self.vhost.amqp_url, DLQ) == n


@pytest.fixture
async def bus(
    vhost: Vhost,
    fast_spec: TopologySpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> AsyncIterator[Bus]:
    vhost.apply(fast_spec)
    broken: set[str] = set()

    def faults(event: AnyEvent, attempts: int) -> None:
        if event.order_id in broken and event.seq == 1:
            raise NonRetryableError(f"{event.order_id}: price list missing")

    async with running_workers(vhost.amqp_url, fast_spec, tmp_path, [D], faults) as workers:
        yield Bus(vhost, workers, monkeypatch, capsys, broken)


async def test_a_redrive_before_the_fix_parks_the_order_again_and_counts_it(bus: Bus) -> None:
    bus.broken.add("ord-x")
    await publish_events(bus.vhost.amqp_url, order_events("ord-x"))
    await eventually(lambda: bus.dlq_holds(3), what="ord-x parked")

    assert await bus.cli("dlq", "redrive", D, "--order-id", "ord-x") == 0

    async def parked_again() -> list[dict[str, object]] | None:
        rows = await bus.dead()
        return rows if len(rows) == 3 and all(r["redriven"] == 1 for r in rows) else None

    rows = await eventually(parked_again, within=30, what="ord-x parked again, redriven once")
    assert sorted((r["seq"], r["reason"]) for r in rows) == [
        (1, "non-retryable"),
        (2, "blocked-by-predecessor"),
        (3, "blocked-by-predecessor"),
    ]
    assert "ord-x" not in await bus.applied()
    # The fix ships: the second redrive applies the order, in order.
    bus.broken.discard("ord-x")
    assert await bus.cli("dlq", "redrive", D, "--order-id", "ord-x") == 0

    async def whole() -> bool:
        return (await bus.applied()).get("ord-x") == [1, 2, 3]

    await eventually(whole, within=30, what="ord-x applied after the fix")
    await eventually(lambda: bus.dlq_holds(0), what="the DLQ empty")


async def test_a_redrive_while_the_orders_next_event_arrives(bus: Bus) -> None:
    """seq 3 is published while seq 1 and 2 are redriven: it lands before the order unparks
    (and is parked behind it) or after (and applies); a second redrive finishes the order."""
    bus.broken.add("ord-w")
    created, paid, shipped = order_events("ord-w")
    await publish_events(bus.vhost.amqp_url, [created, paid])
    await eventually(lambda: bus.dlq_holds(2), what="ord-w parked")
    bus.broken.discard("ord-w")
    redrive = asyncio.create_task(bus.cli("dlq", "redrive", D, "--order-id", "ord-w"))
    await publish_events(bus.vhost.amqp_url, [shipped])
    assert await redrive == 0

    async def settled() -> list[int] | None:
        applied = (await bus.applied()).get("ord-w", [])
        if applied == [1, 2, 3]:
            return applied
        if applied == [1, 2] and await bus.dlq_holds(1):
            # seq 3 came while the order was still parked: redrive it as an operator would.
            assert await bus.cli("dlq", "redrive", D, "--order-id", "ord-w") == 0
        return None

    assert await eventually(settled, within=30, what="ord-w applied 1-2-3") == [1, 2, 3]
    await eventually(lambda: bus.dlq_holds(0), what="the DLQ empty")


async def test_hundreds_of_dead_letters_with_crash_copies_redrive_once_each_in_order(
    bus: Bus,
) -> None:
    orders = {f"ord-{i:03d}": order_events(f"ord-{i:03d}") for i in range(100)}
    # A crash between a dead letter's confirmed publish and its ack leaves two copies.
    copies = [e for o in list(orders.values())[:20] for e in o[:1]]
    letters = [*(e for o in orders.values() for e in o), *copies]

    await publish_to(
        bus.vhost.amqp_url, names.dead_exchange(D), map(dead_letter, reversed(letters))
    )
    assert await depth(bus.vhost.amqp_url, DLQ) == len(letters) == 320
    duplicates_before = metric(bus.workers, "bus_worker_duplicates_total", D)

    assert await bus.cli("dlq", "redrive", D) == 0
    assert "redrove 320 message(s) of 100 order(s)" in bus.capsys.readouterr().out

    async def all_applied() -> dict[str, list[int]] | None:
        applied = await bus.applied()
        return applied if len(applied) == 100 else None

    applied = await eventually(all_applied, within=60, what="every order applied")
    assert all(seqs == [1, 2, 3] for seqs in applied.values()), applied
    # Each crash copy was recognised as already applied, not applied twice.
    await eventually(
        lambda: metric(bus.workers, "bus_worker_duplicates_total", D) - duplicates_before >= 20,
        what="the 20 copies recognised",
    )
    worker = bus.workers.workers[0]
    stock = worker.handler.stock  # type: ignore[attr-defined]
    reserved = dict(await worker.store.query(select(stock.c.sku, stock.c.reserved)))
    assert reserved == {"SKU-1": 200, "SKU-2": 100}  # 2 + 1 units per order, reserved once
    async with DeadLetters(bus.vhost.amqp_url, D) as left:
        assert left.complete and left.messages == []


async def test_a_redrive_cut_off_midway_and_run_again_applies_each_event_once_in_order(
    bus: Bus,
) -> None:
    orders = {f"ord-{i:03d}": order_events(f"ord-{i:03d}") for i in range(300)}
    letters = [e for o in orders.values() for e in o]
    await publish_to(bus.vhost.amqp_url, names.dead_exchange(D), map(dead_letter, letters))
    assert await depth(bus.vhost.amqp_url, DLQ) == 900

    # The operator's connection drops once a few hundred are published: what was published
    # is not acked yet, so it is still in the DLQ as well as on its way to the worker.
    async with DeadLetters(bus.vhost.amqp_url, D) as dead:
        cut: asyncio.Future[asyncio.Future[None]] = asyncio.get_running_loop().create_future()
        count = [0]

        def moved(_: DeadMessage) -> None:
            count[0] += 1
            if count[0] == 300:
                cut.set_result(asyncio.ensure_future(dead._connection.close()))

        with pytest.raises(Exception):  # noqa: B017 - whatever the closed channel raises
            await dead.redrive(dead.messages, on_moved=moved)
        assert cut.done(), "the redrive finished before the connection was cut"
        await cut.result()

    async def partly_applied() -> bool:
        return len(await bus.applied()) > 0

    await eventually(partly_applied, what="what was published before the cut applied")
    # Run again: everything left in the DLQ, including what had gone through already.
    assert await bus.cli("dlq", "redrive", D) == 0

    async def all_applied() -> dict[str, list[int]] | None:
        applied = await bus.applied()
        whole = len(applied) == 300 and all(len(s) == 3 for s in applied.values())
        return applied if whole else None

    applied = await eventually(all_applied, within=60, what="every order applied")
    assert all(seqs == [1, 2, 3] for seqs in applied.values())
    worker = bus.workers.workers[0]
    stock = worker.handler.stock  # type: ignore[attr-defined]
    reserved = dict(await worker.store.query(select(stock.c.sku, stock.c.reserved)))
    assert reserved == {"SKU-1": 600, "SKU-2": 300}
    await eventually(lambda: bus.dlq_holds(0), what="the DLQ empty")
