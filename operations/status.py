"""Per-downstream depth, rates and lag, read from the broker."""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from broker.connect import connect
from broker.management import ManagementClient
from broker.queues import queue_depth
from events.headers import PARKING_REASONS
from operations.dlq import DeadLetters
from topology import names
from topology.replicas import Replicas, replicas_of, wanted_members
from topology.spec import DownstreamSpec, TopologySpec

PARKED_READ_LIMIT = 10_000
# Counting parked orders reads the whole DLQ, holding every dead letter for a moment, which
# a `dlq list` or `redrive` running then would miss: a watch re-reads it only when its depth
# has changed and the last count is this old, and at the latest after PARKED_STALE.
PARKED_MAX_AGE = 30.0
PARKED_STALE = 300.0


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
    parked_age_s: float  # how old that count is (0: read for this status)
    scale_out_at: int
    scale_out: bool
    owners: dict[str, str]  # shard -> the process consuming it ("-": none)
    replicas: dict[str, Replicas] = field(default_factory=dict)  # quorum shard -> members

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        out = asdict(self)
        out["replicas"] = {q: r.as_dict() for q, r in self.replicas.items()}
        return out


@dataclass
class BusStatus:
    """The whole vhost: the cluster's nodes, each downstream, and the log's replicas."""

    vhost: str
    nodes: dict[str, bool]  # node -> running
    downstreams: list[DownstreamStatus]
    log: Replicas | None

    @property
    def short(self) -> list[Replicas]:
        """Shards (and the log) with fewer live members than the file asks for."""
        found = [r for d in self.downstreams for r in d.replicas.values() if r.short]
        return found + ([self.log] if self.log is not None and self.log.short else [])

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "vhost": self.vhost,
            "nodes": self.nodes,
            "downstreams": [d.as_dict() for d in self.downstreams],
            "log": self.log.as_dict() if self.log else None,
            "under_replicated": [r.queue for r in self.short],
        }


async def gather(
    spec: TopologySpec,
    amqp_url: str,
    client: ManagementClient,
    vhost: str,
    counts: ParkedCounts | None = None,
) -> BusStatus:
    """Read every downstream's figures: exact depths by passive declare, the rest from the API
    (parked orders from `counts` while they hold: a watch passes the same one each time)."""
    counts = counts or ParkedCounts()
    nodes = {str(n["name"]): bool(n.get("running")) for n in client.nodes()}
    stats = {q["name"]: q for q in client.list_objects("queues", vhost)}
    owners = shard_owners(client, vhost)
    connection = await connect(amqp_url, "operator:status")
    async with connection:
        channel = await connection.channel()
        rows = [
            await _downstream(d, ds, amqp_url, channel, stats, owners, counts)
            for d, ds in spec.downstreams.items()
        ]
    for row in rows:
        wanted = wanted_members(spec.replication_of(row.downstream), len(nodes))
        quorum = [s for s in row.owners if stats[s].get("type") == "quorum"]
        row.replicas.update({shard: replicas_of(stats[shard], wanted) for shard in quorum})
    log = stats.get(spec.log.name)
    wanted = wanted_members(spec.replication, len(nodes))
    return BusStatus(vhost, nodes, rows, replicas_of(log, wanted) if log else None)


async def _downstream(
    d: str,
    ds: DownstreamSpec,
    amqp_url: str,
    channel: Any,
    stats: dict[str, dict[str, Any]],
    owners: dict[str, str],
    counts: ParkedCounts,
) -> DownstreamStatus:
    # The broker's shards, not the file's count: a live reshard may be draining some.
    pattern = re.compile(names.shard_pattern(d))
    shards = sorted((q for q in stats if pattern.match(q)), key=lambda q: int(q.rsplit(".", 1)[1]))
    ready = sum([await queue_depth(channel, q) for q in shards])
    api = [stats.get(q, {}) for q in shards]
    unacked = sum(int(q.get("messages_unacknowledged") or 0) for q in api)
    ack = sum(_rate(q, "ack") for q in api)
    lag = ready + unacked
    dlq = await queue_depth(channel, names.dlq(d))
    parked, parked_age = await counts.read(amqp_url, d, dlq)
    return DownstreamStatus(
        downstream=d,
        ready=ready,
        unacked=unacked,
        consumers=sum(int(q.get("consumers") or 0) for q in api),
        publish_rate=round(sum(_rate(q, "publish") for q in api), 1),
        ack_rate=round(ack, 1),
        lag_messages=lag,
        lag_seconds=round(lag / ack, 1) if ack > 0 else (0.0 if lag == 0 else None),
        retry={t: await queue_depth(channel, names.retry_queue(d, t)) for t in ds.retry.tiers},
        dlq=dlq,
        parked_orders=parked,
        parked_age_s=parked_age,
        scale_out_at=ds.scale_out_lag,
        scale_out=lag > ds.scale_out_lag,
        owners={shard: owners.get(shard, "-") for shard in shards},
    )


def shard_owners(client: ManagementClient, vhost: str) -> dict[str, str]:
    """Each consumed queue's active consumer: its connection's name (`worker:<d>:<pid>`)."""
    named = {
        c["name"]: (c.get("client_properties") or {}).get("connection_name") or c["name"]
        for c in client.connections(vhost)
    }
    out = {}
    for consumer in client.consumers(vhost):
        if not consumer.get("active", True):
            continue
        queue = (consumer.get("queue") or {}).get("name", "")
        channel = consumer.get("channel_details")
        connection = channel.get("connection_name", "") if isinstance(channel, dict) else ""
        # The stats of a new channel lag; the workers' consumer tags carry their pid meanwhile.
        out[queue] = named.get(connection) or _tag_owner(str(consumer.get("consumer_tag", "")))
    return out


def _tag_owner(tag: str) -> str:
    parts = tag.split("-")
    return f"pid {parts[1]}" if len(parts) > 2 and parts[0] == "ctag" else tag


@dataclass
class _Sample:
    count: int
    dlq_depth: int
    taken: float


@dataclass
class ParkedCounts:
    """Parked orders per downstream, kept between the refreshes of one status watch."""

    samples: dict[str, _Sample] = field(default_factory=dict)

    async def read(
        self, amqp_url: str, downstream: str, dlq_depth: int
    ) -> tuple[int | None, float]:
        """The count and its age: the last sample while it still holds, else a fresh read."""
        now = time.monotonic()
        last = self.samples.get(downstream)
        if last is not None:
            age = now - last.taken
            if age < PARKED_MAX_AGE or (last.dlq_depth == dlq_depth and age < PARKED_STALE):
                return last.count, age
        if dlq_depth > PARKED_READ_LIMIT:
            return None, 0.0
        count = await parked_orders(amqp_url, downstream)
        self.samples[downstream] = _Sample(count, dlq_depth, now)
        return count, 0.0


async def parked_orders(amqp_url: str, downstream: str) -> int:
    """Orders with a dead letter that parks them (read from the DLQ, which keeps everything)."""
    async with DeadLetters(amqp_url, downstream) as dead:
        return len({m.order_id for m in dead.messages if m.reason in PARKING_REASONS})


def _rate(queue: dict[str, Any], kind: str) -> float:
    details = (queue.get("message_stats") or {}).get(f"{kind}_details") or {}
    return float(details.get("rate") or 0.0)
