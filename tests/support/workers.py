"""Running workers in the test process against a test vhost, and reading their stores."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

from events.headers import DeadReason
from simulation.handlers import FaultHook, simulated
from topology.spec import TopologySpec
from workers.handlers.inventory import InventoryHandler
from workers.process.app import Workers, build
from workers.process.settings import WorkerSettings
from workers.store.database import DownstreamStore


def settings_for(amqp_url: str, store_dir: Path, dsn: str | None = None) -> WorkerSettings:
    """Settings pointing workers at a vhost and a store folder (or a PostgreSQL DSN)."""
    return WorkerSettings(amqp_url=amqp_url, workers_store_dir=store_dir, workers_dsn=dsn)


@asynccontextmanager
async def running_workers(
    amqp_url: str,
    spec: TopologySpec,
    store_dir: Path,
    names: Iterable[str] = ("all",),
    faults: FaultHook | None = None,
    dsn: str | None = None,
) -> AsyncIterator[Workers]:
    """Workers consuming for the duration of the block, stopped cleanly after."""
    settings = settings_for(amqp_url, store_dir, dsn)
    workers = await build(spec, list(names), settings, wrap=simulated(faults))
    stop = asyncio.Event()
    task = asyncio.create_task(workers.run(stop))
    try:
        yield workers
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def metric(workers: Workers, name: str, downstream: str, **labels: str) -> float:
    """One sample of the workers' metrics (0 when never counted)."""
    value = workers.registry.get_sample_value(name, {"downstream": downstream, **labels})
    return value or 0.0


async def inbox_counts(workers: Workers) -> dict[str, int]:
    """Inbox rows per downstream."""
    return {w.name: len(await w.store.inbox_rows()) for w in workers.workers}


async def counts_are(workers: Workers, expected: dict[str, int]) -> bool:
    """Whether every downstream's inbox holds exactly the expected number of rows."""
    return await inbox_counts(workers) == expected


def by_order(rows: Iterable[Any]) -> dict[str, list[int]]:
    """seq lists per order, in application order."""
    out: dict[str, list[int]] = {}
    for row in rows:
        out.setdefault(row.order_id, []).append(row.seq)
    return out


def out_of_order(rows: Iterable[Any], where: str = "") -> str | None:
    """The orders whose applied seqs are not 1, 2, 3, ... in application order (a gap
    applied, a seq applied twice or before its predecessor), in words; None when none are."""
    wrong = {o: s for o, s in by_order(rows).items() if s != list(range(1, len(s) + 1))}
    if not wrong:
        return None
    shown = ", ".join(f"{o}: {s}" for o, s in sorted(wrong.items())[:5])
    return f"{where or 'a store'} applied {len(wrong)} order(s) out of seq order ({shown})"


def applied_in_order(*stores: DownstreamStore) -> Callable[[], Awaitable[str | None]]:
    """An invariant for `eventually(always=...)`: every store has applied each order's events
    in seq order so far."""

    async def violation() -> str | None:
        for store in stores:
            if found := out_of_order(await store.inbox_rows(), store.schema):
                return found
        return None

    return violation


def files_in_order(*paths: Path) -> Callable[[], str | None]:
    """`applied_in_order` for SQLite stores that other processes write."""

    def violation() -> str | None:
        for path in paths:
            if found := out_of_order(store_inbox(path), path.stem):
                return found
        return None

    return violation


def workers_in_order(workers: Workers) -> Callable[[], Awaitable[str | None]]:
    """`applied_in_order` for every downstream of in-process workers."""
    return applied_in_order(*(w.store for w in workers.workers))


async def inventory_store(store_dir: Path, spec: TopologySpec) -> DownstreamStore:
    """Open the inventory store a worker process writes (SQLite in store_dir)."""
    handler = InventoryHandler(spec.downstreams["inventory"])
    return await DownstreamStore.open(
        "inventory", handler.metadata, None, store_dir, handler.revisions
    )


class InboxRow(NamedTuple):
    """An inbox row as `by_order` reads it."""

    order_id: str
    seq: int


def store_inbox(store: Path) -> list[InboxRow]:
    """(order_id, seq) of a SQLite store's inbox in application order, read from another
    process's store ([] while it has none)."""
    if not store.exists():
        return []
    with sqlite3.connect(store) as db:
        try:
            rows = db.execute("SELECT order_id, seq FROM inbox ORDER BY applied_at_us").fetchall()
        except sqlite3.OperationalError:  # the worker has not created its tables yet
            return []
    return [InboxRow(o, s) for o, s in rows]


def dead_lettered_at_most(workers: Workers, most: int) -> Callable[[], str | None]:
    """An invariant: no downstream of in-process workers has dead-lettered more than `most`
    events (0: any dead letter is one of a healthy order)."""

    def violation() -> str | None:
        for w in workers.workers:
            count = sum(
                metric(workers, "bus_worker_dead_lettered_total", w.name, reason=reason.value)
                for reason in DeadReason
            )
            if count > most:
                return f"{w.name} dead-lettered {count:.0f} event(s), more than the {most} expected"
        return None

    return violation
