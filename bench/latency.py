"""Latency under load: inventory (2 ms) fed at half its peak rate from a separate process,
publish-to-applied p50/p99, beside a raw consumer's publish-to-received at the same rate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.common import fresh_vhost, workers_env
from bench.measure import tree_cpu
from bench.ring import moved, ring
from broker.management import ManagementClient
from common.settings import Settings, vhost_of
from simulation.launch import simulated_worker_command
from topology import names
from topology.apply import apply_plan, plan_against
from topology.compile import compile_topology
from topology.spec import TopologySpec

_SETTLE_SECONDS = 60.0


def _quantiles(samples: list[float]) -> dict[str, Any]:
    if len(samples) < 2:
        return {"events": len(samples)}
    cuts = statistics.quantiles(samples, n=100)
    return {
        "events": len(samples),
        "p50_ms": round(cuts[49] * 1000, 1),
        "p99_ms": round(cuts[98] * 1000, 1),
    }


async def _feed(amqp_url: str, rate: float, seconds: float, tmp: Path) -> dict[str, float]:
    """Run `python -m bench.feed` in its own process; its publish time per event id."""
    out = tmp / "sent.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.feed", amqp_url, str(rate), str(seconds), str(out)
    )
    if await proc.wait() != 0:
        raise RuntimeError("the feeder failed")
    sent: dict[str, float] = json.loads(out.read_text())
    return sent


def _applied(store: Path) -> dict[str, float]:
    try:
        with contextlib.closing(sqlite3.connect(store, timeout=5)) as db:
            rows = db.execute("SELECT event_id, applied_at_us FROM inbox").fetchall()
    except sqlite3.Error:
        return {}
    return {event_id: us / 1e6 for event_id, us in rows}


async def bus_latency(data: Any, rate: float, seconds: float) -> dict[str, Any]:
    """p50/p99 from publish to the inbox commit of `python -m workers inventory`, and its CPU."""
    spec = TopologySpec.model_validate(data)
    with fresh_vhost(spec) as (url, _), tempfile.TemporaryDirectory() as tmp:
        env = workers_env(url, data, Path(tmp))
        worker = await asyncio.create_subprocess_exec(
            *simulated_worker_command("inventory"), env=env
        )
        try:
            await _consuming(vhost_of(url), spec.downstreams["inventory"].shards)
            cpu = tree_cpu(worker.pid)
            sent = await _feed(url, rate, seconds, Path(tmp))
            deadline = time.monotonic() + _SETTLE_SECONDS
            while len(applied := _applied(Path(tmp) / "inventory.db")) < len(sent):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(applied)} of {len(sent)} applied")
                await asyncio.sleep(0.2)
            cpu = tree_cpu(worker.pid) - cpu
        finally:
            worker.send_signal(signal.SIGTERM)
            await worker.wait()
    stats = _quantiles([applied[e] - t for e, t in sent.items()])
    stats["cpu_us_per_event"] = round(cpu / len(sent) * 1e6, 1)
    return stats


async def _consuming(vhost: str, shards: int) -> None:
    """Wait until a consumer is attached to every inventory shard (the clock starts then)."""
    settings = Settings()
    with ManagementClient(settings.rabbitmq_management_url) as client:
        for _ in range(600):
            queues = client.list_objects("queues", vhost)
            attached = [
                q for q in queues if q["name"].startswith("inventory.") and q.get("consumers")
            ]
            if len(attached) >= shards:
                return
            await asyncio.sleep(0.1)
    raise RuntimeError("the worker did not start consuming")


async def ingest_peak(spec: TopologySpec, seconds: float) -> float:
    """Events/s a raw consumer receives while the feeder publishes as fast as it can."""
    received: dict[str, float] = {}
    await _raw(spec, 0.0, seconds, received)
    started = min(received.values())
    return sum(1 for t in received.values() if t <= started + seconds) / seconds


async def raw_latency(spec: TopologySpec, rate: float, seconds: float) -> dict[str, Any]:
    """p50/p99 from publish to receipt by a raw consumer that only acks, at the same rate."""
    received: dict[str, float] = {}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    sent = await _raw(spec, rate, seconds, received)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    stats = _quantiles([received[e] - t for e, t in sent.items()])
    stats["cpu_us_per_event"] = round(cpu / len(sent) * 1e6, 1)
    return stats


async def _raw(
    spec: TopologySpec, rate: float, seconds: float, received: dict[str, float]
) -> dict[str, float]:
    """Feed at `rate` (0: flat out) to a raw consumer that only acks; the publish times."""
    with fresh_vhost(spec) as (url, _), tempfile.TemporaryDirectory() as tmp:
        connection = await aio_pika.connect(url)
        async with connection:
            for i in range(spec.downstreams["inventory"].shards):
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=spec.downstreams["inventory"].prefetch)
                queue = await channel.get_queue(names.shard("inventory", i), ensure=False)

                async def take(message: AbstractIncomingMessage) -> None:
                    received[message.message_id or ""] = time.time()
                    await message.ack()

                await queue.consume(take)
            sent = await _feed(url, rate, seconds, Path(tmp))
            deadline = time.monotonic() + _SETTLE_SECONDS
            while len(received) < len(sent):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(received)} of {len(sent)} received")
                await asyncio.sleep(0.1)
    return sent


async def reshard_wait(data: Any, rate: float, seconds: float, grow_to: int) -> dict[str, Any]:
    """Publish-to-applied latency of orders moved by growing inventory's shards mid-feed.

    `python -m workers inventory` runs fed at `rate`; a third of the way in, the topology
    grows to `grow_to` shards (a live `apply`). Orders the ring moved (read off the broker)
    have their later events land on a new shard, where they wait for their earlier ones.
    """
    spec = TopologySpec.model_validate(data)
    shards = spec.downstreams["inventory"].shards
    with fresh_vhost(spec) as (url, _), tempfile.TemporaryDirectory() as tmp:
        env = workers_env(url, data, Path(tmp))
        worker = await asyncio.create_subprocess_exec(
            *simulated_worker_command("inventory"), env=env
        )
        try:
            await _consuming(vhost_of(url), shards)
            feeding = asyncio.create_task(_feed(url, rate, seconds, Path(tmp)))
            await asyncio.sleep(seconds / 3)
            grown = {
                **data,
                "downstreams": {
                    "inventory": {**data["downstreams"]["inventory"], "shards": grow_to}
                },
            }
            _apply(TopologySpec.model_validate(grown), vhost_of(url))
            grew_at = time.time()
            sent = await feeding
            deadline = time.monotonic() + _SETTLE_SECONDS
            while len(rows := _inbox(Path(tmp) / "inventory.db")) < len(sent):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(rows)} of {len(sent)} applied")
                await asyncio.sleep(0.2)
            orders = sorted({order for order, _ in rows.values()})
            before = await ring(url, orders, list(range(shards)))
            after = await ring(url, orders, list(range(grow_to)))
        finally:
            worker.send_signal(signal.SIGTERM)
            await worker.wait()
    shifted = moved(before, after)
    after_grow = {e: t for e, t in sent.items() if t >= grew_at}
    waits_moved = [rows[e][1] - t for e, t in after_grow.items() if rows[e][0] in shifted]
    waits_other = [rows[e][1] - t for e, t in after_grow.items() if rows[e][0] not in shifted]
    return {
        "shards": f"{shards} -> {grow_to}",
        "rate_events_per_s": round(rate),
        "orders": len(orders),
        "moved_orders": len(shifted),
        "moved": _quantiles(waits_moved),
        "not_moved": _quantiles(waits_other),
    }


def _inbox(store: Path) -> dict[str, tuple[str, float]]:
    """event_id -> (order_id, applied time) from a SQLite store."""
    try:
        with contextlib.closing(sqlite3.connect(store, timeout=5)) as db:
            rows = db.execute("SELECT event_id, order_id, applied_at_us FROM inbox").fetchall()
    except sqlite3.Error:
        return {}
    return {event_id: (order_id, us / 1e6) for event_id, order_id, us in rows}


def _apply(spec: TopologySpec, vhost: str) -> None:
    settings = Settings()
    with ManagementClient(settings.rabbitmq_management_url) as client:
        apply_plan(client, plan_against(client, spec, compile_topology(spec), vhost))
