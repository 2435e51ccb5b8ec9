"""Resharding inventory live while orders flow: 4 -> 8 shards, then 8 -> 6, with two worker
processes on one PostgreSQL store. Every order is applied once and in seq order, and only
the poisoned orders reach the DLQ; the test reports what moved and how long it waited."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bench.ring import moved, ring
from operations.cli import main
from operations.dlq import DeadLetters
from producer.db import create_schema, make_engine
from simulation.orders import OrderStore
from simulation.traffic import run_traffic
from tests.support import topologies
from tests.support.fixtures import Vhost
from tests.support.judge import expected_from_outbox
from tests.support.polling import eventually
from tests.support.processes import free_port, worker_process
from tests.support.producer import postgres_database, running_relay, wait_for_backlog
from tests.support.shards import scraped_one
from tests.support.workers import by_order
from workers.handlers.inventory import InventoryHandler
from workers.store.database import DownstreamStore

pytestmark = pytest.mark.integration
ORDERS, RATE, SEED = 3000, 150.0, 41


def _outbox(db: Path) -> list[tuple[str, str, int, int, bytes]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT event_id, order_id, seq, occurred_at_ms, body FROM outbox"
        ).fetchall()


def _written(db: Path, events: int) -> bool:
    """Whether the order service has written at least this many events."""
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0]) >= events


async def _apply(vhost: Vhost, monkeypatch: pytest.MonkeyPatch, path: Path) -> int:
    vhost.env(monkeypatch)
    return await asyncio.to_thread(main, ["--file", str(path), "apply", "--drain-timeout", "120"])


async def test_grow_and_shrink_while_orders_flow(
    vhost: Vhost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, topology_file: Any
) -> None:
    data = topologies.fast_data()
    data["downstreams"] = {"inventory": data["downstreams"]["inventory"]}
    spec = topologies.spec_of(data)
    assert await _apply(vhost, monkeypatch, topology_file(data)) == 0
    db = tmp_path / "orders.db"
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    await create_schema(engine)
    ports = [free_port(), free_port()]
    async with postgres_database() as dsn:
        path = topology_file(data, "start.yaml")
        with ExitStack() as procs:
            for port in ports:
                procs.enter_context(
                    worker_process(
                        vhost.amqp_url, path, tmp_path, "inventory", metrics_port=port, dsn=dsn
                    )
                )
            async with running_relay(engine, vhost.amqp_url, spec):
                traffic = asyncio.create_task(
                    run_traffic(OrderStore(engine), ORDERS, seed=SEED, rate=RATE, poison_rate=0.01)
                )
                await eventually(lambda: _written(db, ORDERS), every=0.1, what="a third in")
                data["downstreams"]["inventory"]["shards"] = 8
                assert await _apply(vhost, monkeypatch, topology_file(data, "eight.yaml")) == 0
                await eventually(lambda: _written(db, 2 * ORDERS), every=0.1, what="2/3 in")
                data["downstreams"]["inventory"]["shards"] = 6
                assert await _apply(vhost, monkeypatch, topology_file(data, "six.yaml")) == 0
                stats = await traffic
                await wait_for_backlog(engine)
            outbox = _outbox(db)
            handler = InventoryHandler(spec.downstreams["inventory"])
            store = await DownstreamStore.open(
                "inventory", handler.metadata, dsn, tmp_path, handler.revisions
            )
            poisoned = {row[1] for row in outbox if row[2] == 1 and b"POISON-" in row[4]}
            healthy = [row for row in outbox if row[1] not in poisoned]

            async def applied() -> bool:
                return len(await store.inbox_rows()) >= len(healthy)

            try:
                await eventually(applied, within=180, what="every healthy event applied")
            except AssertionError as exc:
                applied_ids = {r.event_id for r in await store.inbox_rows()}
                missing = [row[1:3] for row in healthy if row[0] not in applied_ids]
                queues = {
                    q["name"]: (q.get("messages_ready"), q.get("messages_unacknowledged"))
                    for q in vhost.client.list_objects("queues", vhost.name)
                }
                async with DeadLetters(vhost.amqp_url, "inventory") as dead:
                    mine = {o for o, _ in missing}
                    letters = [
                        (m.order_id, m.seq, m.reason, m.headers.get("x-error-message"))
                        for m in dead.messages
                        if m.order_id in mine
                    ]
                raise AssertionError(
                    f"{exc}; missing {missing[:20]}; their dead letters {letters}; queues {queues}"
                ) from None
            await eventually(
                lambda: _dead(vhost, 3 * len(poisoned)), within=60, what="poisoned orders parked"
            )
            deferred = sum(scraped_one(p, "bus_worker_deferred_total") for p in ports)
            rows = await store.inbox_rows()
            stock = handler.metadata.tables["stock"]
            reserved = dict(await store.query(select(stock.c.sku, stock.c.reserved)))
            await store.close()
    await engine.dispose()
    assert stats.poison_orders == len(poisoned) > 0
    assert {r.event_id for r in rows} == {row[0] for row in healthy}
    assert reserved == dict(expected_from_outbox(db).reserved), "a reservation lost or twice"
    assert all(seqs == [1, 2, 3] for seqs in by_order(rows).values())
    orders = sorted({row[1] for row in outbox})
    four, eight, six = [await ring(vhost.amqp_url, orders, list(range(n))) for n in (4, 8, 6)]
    grew, shrank = moved(four, eight), moved(eight, six)
    occurred = {row[0]: row[3] for row in outbox}
    waits = [r.applied_at_us / 1e6 - occurred[r.event_id] / 1000 for r in rows]
    moved_waits = [w for r, w in zip(rows, waits, strict=True) if r.order_id in grew | shrank]
    print(
        f"\nreshard under load: {len(orders)} orders, {len(grew)} moved growing 4 -> 8, "
        f"{len(shrank)} moved shrinking 8 -> 6; {deferred:.0f} events deferred; "
        f"longest wait of a moved order's event {max(moved_waits):.2f}s (any event "
        f"{max(waits):.2f}s); {len(poisoned)} poisoned orders dead-lettered"
    )
    assert grew and shrank


async def _dead(vhost: Vhost, expected: int) -> bool:
    """Whether the DLQ holds `expected` distinct events, all of poisoned orders' reasons."""
    async with DeadLetters(vhost.amqp_url, "inventory") as dead:
        reasons = {(m.event_id, m.reason) for m in dead.messages}
    assert {reason for _, reason in reasons} <= {"non-retryable", "blocked-by-predecessor"}
    return len(reasons) == expected
