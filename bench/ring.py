"""Where the broker's consistent-hash ring sends each order, read off the broker itself.

Used by the reshard benchmark and the reshard tests.

A consistent-hash exchange maps a key by the order its bindings were made in, not by the
queues' names: a probe exchange bound in the same order to probe queues routes every
order id exactly as a downstream's hash exchange with that many shards does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import aio_pika

from topology.compile import HASH_HEADER, SHARD_WEIGHT


async def ring(amqp_url: str, order_ids: Iterable[str], bindings: list[int]) -> dict[str, int]:
    """Each order's shard index on a ring bound to shards `bindings`, in that order."""
    ids = list(order_ids)
    probe = f"probe-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            probe, "x-consistent-hash", auto_delete=True, arguments={"hash-header": HASH_HEADER}
        )
        queues = {}
        for index in bindings:
            queue = await channel.declare_queue(f"{probe}.{index}", exclusive=True)
            await queue.bind(exchange, routing_key=SHARD_WEIGHT)
            queues[index] = queue
        for order_id in ids:
            message = aio_pika.Message(b"", headers={HASH_HEADER: order_id}, message_id=order_id)
            await exchange.publish(message, routing_key="")
        out: dict[str, int] = {}
        for index, queue in queues.items():
            while (got := await queue.get(no_ack=True, fail=False)) is not None:
                out[got.message_id or ""] = index
        return out


def moved(before: dict[str, int], after: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Orders routed to another shard after the change: (from, to)."""
    return {o: (before[o], after[o]) for o in before if after.get(o) != before[o]}
