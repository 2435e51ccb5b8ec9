"""Re-feed one downstream from the orders.log stream, from a point in time."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aio_pika.abc import AbstractIncomingMessage

from broker.connect import connect
from common.cli import duration
from events import headers as h
from events.codec import republished
from topology import names

IDLE_SECONDS = 1.5  # no message for this long: the end of the stream was reached


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO-8601 time, or a duration ago ('15m', '2h', '7d', or seconds)."""
    now = now or datetime.now(UTC)
    try:
        return now - timedelta(seconds=duration(text))
    except argparse.ArgumentTypeError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a time (ISO 8601) nor a duration like 15m, 2h"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass
class ReplayStats:
    """What a replay read and sent."""

    read: int = 0
    replayed: int = 0
    skipped: int = 0


async def replay(
    amqp_url: str,
    log_queue: str,
    downstream: str,
    since: datetime,
    until: datetime | None = None,
    order_id: str | None = None,
    reapply: bool = False,
    on_event: Callable[[ReplayStats], None] | None = None,
) -> ReplayStats:
    """Publish the stream's events from `since` to the downstream's hash exchange only."""
    stats = ReplayStats()
    connection = await connect(amqp_url, "operator:replay")
    async with connection:
        reader = await connection.channel()
        await reader.set_qos(prefetch_count=500)  # streams need a prefetch
        writer = await connection.channel(publisher_confirms=True, on_return_raises=True)
        target = await writer.get_exchange(names.hash_exchange(downstream), ensure=False)
        queue = await reader.get_queue(log_queue, ensure=False)
        pending: set[asyncio.Future[object]] = set()
        last_seen = asyncio.get_running_loop().time()
        finished = asyncio.Event()

        async def take(message: AbstractIncomingMessage) -> None:
            nonlocal last_seen
            last_seen = asyncio.get_running_loop().time()
            stats.read += 1
            stamp = message.timestamp
            if until is not None and stamp is not None and stamp.replace(tzinfo=UTC) > until:
                finished.set()
            elif order_id is not None and h.order_id_of(message.headers or {}) != order_id:
                stats.skipped += 1
            else:
                headers = dict(message.headers or {})
                headers[h.REPLAYED] = True
                if reapply:
                    headers[h.REAPPLY] = True
                out = republished(message, headers)
                pending.add(
                    asyncio.ensure_future(target.publish(out, routing_key=message.type or ""))
                )
                stats.replayed += 1
            await message.ack()
            if on_event:
                on_event(stats)

        tag = await queue.consume(take, arguments={"x-stream-offset": since})
        while not finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), 0.25)
            if asyncio.get_running_loop().time() - last_seen > IDLE_SECONDS:
                break
        await queue.cancel(tag)
        await asyncio.gather(*pending)  # every replayed event confirmed before we report
    return stats
