"""Per-downstream depth, rates and lag, read from the broker."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import aio_pika

from common.amqp import queue_depth
from events.headers import PARKING_REASONS
from operations.dlq import DeadLetters
from topology import names
from topology.management import ManagementClient
from topology.spec import TopologySpec

PARKED_READ_LIMIT = 10_000


@dataclass
class DownstreamStatus:
    """What an operator needs to see about one downstream."""

    downstream: str
    ready: int
    unacked: int
    consumers: int
    publish_rate: float
    ack_rate: float
    lag_messages: int
    lag_seconds: float | None  # time to drain at the current ack rate; None when not draining
    retry: dict[str, int]
    dlq: int
    parked_orders: int | None  # None when the DLQ is too deep to read for a status line
    scale_out_at: int
    scale_out: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


async def gather(
    spec: TopologySpec, amqp_url: str, client: ManagementClient, vhost: str
) -> list[DownstreamStatus]:
    """Read every downstream's figures: exact depths by passive declare, the rest from the API."""
    stats = {q["name"]: q for q in client.list_objects("queues", vhost)}
    connection = await aio_pika.connect(amqp_url)
    out = []
    async with connection:
        channel = await connection.channel()

        async def depth(queue: str) -> int:
            return await queue_depth(channel, queue)

        for d, ds in spec.downstreams.items():
            shards = [names.shard(d, i) for i in range(ds.shards)]
            ready = sum([await depth(q) for q in shards])
            api = [stats.get(q, {}) for q in shards]
            unacked = sum(int(q.get("messages_unacknowledged") or 0) for q in api)
            consumers = sum(int(q.get("consumers") or 0) for q in api)
            publish = sum(_rate(q, "publish") for q in api)
            ack = sum(_rate(q, "ack") for q in api)
            lag = ready + unacked
            out.append(
                DownstreamStatus(
                    downstream=d,
                    ready=ready,
                    unacked=unacked,
                    consumers=consumers,
                    publish_rate=round(publish, 1),
                    ack_rate=round(ack, 1),
                    lag_messages=lag,
                    lag_seconds=round(lag / ack, 1) if ack > 0 else (0.0 if lag == 0 else None),
                    retry={t: await depth(names.retry_queue(d, t)) for t in ds.retry.tiers},
                    dlq=(dlq := await depth(names.dlq(d))),
                    parked_orders=await parked_orders(amqp_url, d)
                    if dlq <= PARKED_READ_LIMIT
                    else None,
                    scale_out_at=ds.scale_out_lag,
                    scale_out=lag > ds.scale_out_lag,
                )
            )
    return out


async def parked_orders(amqp_url: str, downstream: str) -> int:
    """Orders with a dead letter that parks them (read from the DLQ, which keeps everything)."""
    async with DeadLetters(amqp_url, downstream) as dead:
        return len({m.order_id for m in dead.messages if m.reason in PARKING_REASONS})


def _rate(queue: dict[str, Any], kind: str) -> float:
    details = (queue.get("message_stats") or {}).get(f"{kind}_details") or {}
    return float(details.get("rate") or 0.0)
