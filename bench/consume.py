"""The raw baseline: a plain aio-pika consumer that only acks (multiple, every 50), as a process.

    python -m bench.consume AMQP_URL TOPOLOGY_FILE TOTAL DOWNSTREAM[,DOWNSTREAM...]

Consumes every shard of the downstreams with the file's prefetch until TOTAL deliveries,
then prints its steady-window marks (`bench.measure.SelfMarks`).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.measure import SelfMarks
from topology import names
from topology.spec import load_spec

ACK_EVERY = 50


async def consume(amqp_url: str, file: Path, total: int, downstreams: list[str]) -> SelfMarks:
    """Ack every delivery of the downstreams' shards (multiple, every 50) until `total`."""
    spec = load_spec(file)
    marks = SelfMarks(total)
    done = asyncio.get_running_loop().create_future()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for d in downstreams:
            ds = spec.downstreams[d]
            for i in range(ds.shards):
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=ds.prefetch)
                queue = await channel.get_queue(names.shard(d, i), ensure=False)
                await queue.consume(_acker(marks, done), no_ack=False)
        await done
    return marks


def _acker(marks: SelfMarks, done: asyncio.Future[None]) -> Any:
    """A channel's callback: counts, and acks (multiple) every ACK_EVERY of its deliveries."""
    seen = 0

    async def on_message(message: AbstractIncomingMessage) -> None:
        nonlocal seen
        seen += 1
        finished = marks.hit()
        if seen % ACK_EVERY == 0 or finished:
            await message.ack(multiple=True)
        if finished and not done.done():
            done.set_result(None)

    return on_message


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.consume", description=__doc__)
    parser.add_argument("amqp_url")
    parser.add_argument("file", type=Path)
    parser.add_argument("total", type=int)
    parser.add_argument("downstreams")
    args = parser.parse_args()
    result = asyncio.run(consume(args.amqp_url, args.file, args.total, args.downstreams.split(",")))
    print(result.report())
