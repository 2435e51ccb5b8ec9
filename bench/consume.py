"""Raw consumption baselines: what a plain aio-pika consumer achieves on the same shards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from events import AnyEvent, encode
from topology import names
from topology.spec import TopologySpec

ACK_EVERY = 50


async def publish_all(amqp_url: str, events: Iterable[AnyEvent], window: int = 512) -> int:
    """Publish events to `orders` with a confirm window; return how many."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("orders", ensure=False)
        slots = asyncio.Semaphore(window)
        pending: set[asyncio.Future[Any]] = set()

        def settled(fut: asyncio.Future[Any]) -> None:
            slots.release()
            pending.discard(fut)

        count = 0
        for event in events:
            await slots.acquire()
            fut = asyncio.ensure_future(exchange.publish(encode(event), event.event_type.value))
            pending.add(fut)
            fut.add_done_callback(settled)
            count += 1
        await asyncio.gather(*pending)
        return count


def _acker(total: int, done: asyncio.Future[None], counter: list[int]) -> Any:
    """A consumer callback that acks every ACK_EVERY messages of its channel (multiple)."""
    on_channel = 0

    async def on_message(message: AbstractIncomingMessage) -> None:
        nonlocal on_channel
        on_channel += 1
        counter[0] += 1
        if on_channel % ACK_EVERY == 0 or counter[0] >= total:
            await message.ack(multiple=True)
        if counter[0] >= total and not done.done():
            done.set_result(None)

    return on_message


async def raw_consume(
    amqp_url: str, spec: TopologySpec, downstreams: list[str], per_downstream: int
) -> float:
    """Consume every shard of the downstreams, acking (multiple) every 50; return events/s."""
    connection = await aio_pika.connect(amqp_url)
    total = per_downstream * len(downstreams)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    counter = [0]
    async with connection:
        started = time.perf_counter()
        for d in downstreams:
            ds = spec.downstreams[d]
            for i in range(ds.shards):
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=ds.prefetch)
                queue = await channel.get_queue(names.shard(d, i), ensure=False)
                await queue.consume(_acker(total, done, counter), no_ack=False)
        await done
        # Per downstream: the same unit as the bus figure (events applied by each downstream).
        return per_downstream / (time.perf_counter() - started)
