"""Running workers in the test process against a test vhost, and reading their stores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika

from events import AnyEvent, encode
from tests.integration.amqp import publish_confirmed
from topology.settings import Settings
from topology.spec import TopologySpec
from workers.app import Workers, build
from workers.handlers import FaultHook


def settings_for(amqp_url: str, store_dir: Path, dsn: str | None = None) -> Settings:
    """Settings pointing workers at a vhost and a store folder (or a PostgreSQL DSN)."""
    return Settings(amqp_url=amqp_url, workers_store_dir=store_dir, workers_dsn=dsn)


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
    workers = await build(spec, list(names), settings, faults=faults)
    stop = asyncio.Event()
    task = asyncio.create_task(workers.run(stop))
    try:
        yield workers
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def publish_events(amqp_url: str, events: Iterable[AnyEvent]) -> int:
    """Publish events to `orders` with confirms, in the given order."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        return await publish_confirmed(
            channel, "orders", [(e.event_type.value, encode(e)) for e in events]
        )


async def wait_for(
    check: Callable[[], Any], within: float = 60.0, every: float = 0.2, what: str = "condition"
) -> Any:
    """Poll an async check until it returns something truthy."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within}s (last: {result!r})")
        await asyncio.sleep(every)


async def inbox_counts(workers: Workers) -> dict[str, int]:
    """Inbox rows per downstream."""
    return {w.name: len(await w.store.inbox_rows()) for w in workers.workers}


def by_order(rows: Iterable[Any]) -> dict[str, list[int]]:
    """seq lists per order, in application order."""
    out: dict[str, list[int]] = {}
    for row in rows:
        out.setdefault(row.order_id, []).append(row.seq)
    return out
