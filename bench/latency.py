"""Latency under load: inventory (2 ms) fed at half its peak rate, publish-to-applied p50/p99,
beside a raw consumer's publish-to-received latency at the same rate, in one run."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.common import fresh_vhost
from bench.relay import life_of
from events import encode
from producer.simulate import plan_order
from topology import names
from topology.settings import Settings
from topology.spec import TopologySpec
from workers.app import build


def _quantiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100)
    return {"p50_ms": round(cuts[49] * 1000, 1), "p99_ms": round(cuts[98] * 1000, 1)}


async def _feed(amqp_url: str, rate: float, seconds: float, sent: dict[str, float]) -> None:
    """Publish whole orders at `rate` events/s for `seconds`, recording each publish time."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("orders", ensure=False)
        started, i, pending = time.perf_counter(), 0, []
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * rate / 3)
            while i < due:
                for event in life_of(plan_order(13, i, 0.0, 0.0)):
                    sent[str(event.event_id)] = time.time()
                    pending.append(
                        asyncio.ensure_future(
                            exchange.publish(encode(event), event.event_type.value)
                        )
                    )
                i += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending)


async def bus_latency(spec: TopologySpec, rate: float, seconds: float) -> dict[str, Any]:
    """p50/p99 from publish to the inbox commit, for inventory at `rate` events/s."""
    sent: dict[str, float] = {}
    with fresh_vhost(spec) as (url, _), tempfile.TemporaryDirectory() as tmp:
        workers = await build(
            spec, ["inventory"], Settings(amqp_url=url, workers_store_dir=Path(tmp))
        )
        stop = asyncio.Event()
        task = asyncio.create_task(workers.run(stop))
        await asyncio.sleep(1.0)  # consumers attached
        await _feed(url, rate, seconds, sent)
        store = workers.workers[0].store
        while len(rows := await store.inbox_rows()) < len(sent):  # noqa: ASYNC110 - sampling
            await asyncio.sleep(0.2)
        stop.set()
        await task
    return _quantiles([r.applied_at_us / 1e6 - sent[r.event_id] for r in rows])


async def raw_latency(spec: TopologySpec, rate: float, seconds: float) -> dict[str, Any]:
    """p50/p99 from publish to receipt by a raw consumer that only acks, at the same rate."""
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    with fresh_vhost(spec) as (url, _):
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
            await _feed(url, rate, seconds, sent)
            while len(received) < len(sent):  # noqa: ASYNC110 - sampling
                await asyncio.sleep(0.1)
    return _quantiles([received[e] - t for e, t in sent.items()])
