"""A paced feeder in its own process: whole orders at a steady event rate, every publish confirmed.

    python -m bench.feed AMQP_URL RATE SECONDS OUT.json

RATE 0 publishes as fast as confirms allow (a window of 256). Writes {event_id: publish time
(epoch seconds)} to OUT.json when every publish is confirmed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aio_pika

from events import encode
from simulation.planned import plan_order

_TICK = 0.002  # pacing granularity; bursts stay below one tick's worth of events
_WINDOW = 256


async def feed(amqp_url: str, rate: float, seconds: float) -> dict[str, float]:
    """Publish whole orders at `rate` events/s for `seconds`; return each event's publish time."""
    sent: dict[str, float] = {}
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("orders", ensure=False)
        pending: list[asyncio.Future[object]] = []
        started, order = time.perf_counter(), 0
        while (elapsed := time.perf_counter() - started) < seconds:
            while order * 3 < elapsed * rate or (rate <= 0 and len(pending) < _WINDOW):
                for event in plan_order(13, order, 0.0, 0.0).events():
                    message = encode(event)
                    sent[str(event.event_id)] = time.time()
                    pending.append(
                        asyncio.ensure_future(exchange.publish(message, event.event_type.value))
                    )
                order += 1
            if len(pending) >= _WINDOW:
                await asyncio.gather(*pending)
                pending.clear()
            if rate > 0:
                await asyncio.sleep(_TICK)
        await asyncio.gather(*pending)
    return sent


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.feed", description=__doc__)
    parser.add_argument("amqp_url")
    parser.add_argument("rate", type=float)
    parser.add_argument("seconds", type=float)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    args.out.write_text(json.dumps(asyncio.run(feed(args.amqp_url, args.rate, args.seconds))))
