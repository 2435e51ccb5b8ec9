"""Relay throughput against a raw aio-pika publisher: same messages, exchange and window.

    python -m bench.relay [--events 30000] [--window 256] [--rounds 3]

Each round publishes the same outbox rows twice, each time into a fresh vhost with the
topology applied: once with a plain aio-pika confirm window, once through the relay
(reading the outbox, publishing, marking rows sent). Prints JSON with medians and ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aio_pika
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import fresh_vhost, machine
from bench.measure import own_cpu
from common.logs import configure_logging
from producer.db import create_schema, make_engine, outbox
from producer.outbox import Outbox, OutboxRow, outbox_values
from producer.relay import Relay
from simulation.planned import plan_order


async def prefill(engine: AsyncEngine, events: int) -> list[OutboxRow]:
    """Write `events` outbox rows (orders' created/paid/shipped, interleaved by id)."""
    await create_schema(engine)
    rows = [
        outbox_values(event)
        for i in range(events // 3)
        for event in plan_order(1, i, 0, 0).events()
    ]
    async with engine.begin() as conn:
        await conn.execute(outbox.insert(), rows)
    return await Outbox(engine).fetch_unsent(0, events)


async def raw_publisher(
    amqp_url: str, exchange: str, rows: list[OutboxRow], window: int
) -> tuple[float, float]:
    """Publish every row with a window of confirms; return events/s and CPU µs per event."""
    messages = [(row.event_type, row.message("bench")) for row in rows]
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        slots = asyncio.Semaphore(window)
        pending: set[asyncio.Future[Any]] = set()

        def release(fut: asyncio.Future[Any]) -> None:
            slots.release()
            pending.discard(fut)

        started, cpu = time.perf_counter(), own_cpu()
        for routing_key, message in messages:
            await slots.acquire()
            fut = asyncio.ensure_future(target.publish(message, routing_key, mandatory=True))
            pending.add(fut)
            fut.add_done_callback(release)
        await asyncio.gather(*pending)
        elapsed, cpu = time.perf_counter() - started, own_cpu() - cpu
        return len(messages) / elapsed, cpu / len(messages) * 1e6


async def relay_run(
    amqp_url: str, exchange: str, engine: AsyncEngine, total: int, window: int
) -> tuple[float, float]:
    """Run the relay until the outbox is drained; return events/s and CPU µs per event."""
    relay = Relay(Outbox(engine), amqp_url, exchange=exchange, window=window, poll_interval=0.01)
    stop = asyncio.Event()
    started, cpu = time.perf_counter(), own_cpu()
    task = asyncio.create_task(relay.run(stop))
    while relay.stats.confirmed < total:  # noqa: ASYNC110 - sampling the relay's progress
        await asyncio.sleep(0.005)
    elapsed, cpu = time.perf_counter() - started, own_cpu() - cpu
    stop.set()
    await task
    return total / elapsed, cpu / total * 1e6


async def main(events: int, window: int, rounds: int) -> dict[str, object]:
    """Run the rounds and return the report."""
    raw: list[tuple[float, float]] = []
    relayed: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            engine = make_engine(f"sqlite+aiosqlite:///{Path(tmp) / f'outbox{r}.db'}")
            rows = await prefill(engine, events)
            with fresh_vhost() as (url, spec):
                raw.append(await raw_publisher(url, spec.exchange.name, rows, window))
            with fresh_vhost() as (url, spec):
                relayed.append(await relay_run(url, spec.exchange.name, engine, len(rows), window))
            await engine.dispose()
    raw_median = statistics.median(r for r, _ in raw)
    relay_median = statistics.median(r for r, _ in relayed)
    return {
        "benchmark": "relay_vs_raw_publisher",
        "events": len(rows),
        "window": window,
        "rounds": rounds,
        "fanout": "5 downstreams x 4 quorum shards + stream",
        "raw_events_per_s": round(raw_median),
        "relay_events_per_s": round(relay_median),
        "ratio": round(relay_median / raw_median, 3),
        "raw_cpu_us_per_event": round(statistics.median(c for _, c in raw), 1),
        "relay_cpu_us_per_event": round(statistics.median(c for _, c in relayed), 1),
        "raw_rounds": [round(x) for x, _ in raw],
        "relay_rounds": [round(x) for x, _ in relayed],
        "machine": machine(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging("WARNING")
    print(json.dumps(asyncio.run(main(args.events, args.window, args.rounds)), indent=2))
