"""Exact queue depths, read with passive declares (the management API lags)."""

from __future__ import annotations

from collections.abc import Iterable

from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import ChannelNotFoundEntity


async def queue_depth(channel: AbstractChannel, queue: str) -> int:
    """Ready messages in a queue, exact (a passive declare; the management API lags)."""
    return (await queue_counts(channel, queue))[0]


async def queue_counts(channel: AbstractChannel, queue: str) -> tuple[int, int]:
    """A queue's ready messages and consumers, exact (a passive declare)."""
    declared = (await channel.declare_queue(queue, passive=True)).declaration_result
    return int(declared.message_count or 0), int(declared.consumer_count or 0)


async def depths(connection: AbstractConnection, queues: Iterable[str]) -> dict[str, int | None]:
    """Ready messages of each queue (None: it does not exist), on channels of their own.

    A passive declare of a missing queue closes its channel: the next one gets a new channel,
    and no channel anyone else uses is lost to it.
    """
    out: dict[str, int | None] = {}
    channel: AbstractChannel | None = None
    try:
        for queue in queues:
            if channel is None or channel.is_closed:
                channel = await connection.channel()
            try:
                out[queue] = await queue_depth(channel, queue)
            except ChannelNotFoundEntity:
                out[queue] = None
    finally:
        if channel is not None and not channel.is_closed:
            await channel.close()
    return out
