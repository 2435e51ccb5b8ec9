"""Compile a topology spec into the concrete broker objects of DESIGN.md (pure)."""

from __future__ import annotations

from broker.objects import BindingDef, BrokerObjects, ExchangeDef, JsonDict, PolicyDef, QueueDef
from events import headers
from topology import names
from topology.spec import DownstreamSpec, QueueType, ReplicationSpec, TopologySpec

HASH_HEADER = headers.ORDER_ID
# Every shard is bound with the same weight, so each gets an equal share of the hash ring.
SHARD_WEIGHT = "1"
# Read only when a queue is created: a live queue keeps its members and leader.
GROUP_SIZE_ARG = "x-quorum-initial-group-size"
STREAM_REPLICAS_ARG = "x-initial-cluster-size"
LEADER_LOCATOR_ARG = "x-queue-leader-locator"
CREATION_ONLY_ARGS = frozenset({GROUP_SIZE_ARG, STREAM_REPLICAS_ARG, LEADER_LOCATOR_ARG})
# RabbitMQ 4 gives every quorum queue a delivery limit of 20 unless a policy sets one, and
# counts each message a closed channel gives back. The DLQ tools give back all they read, and
# a DLQ has nowhere to dead-letter to: past the limit the broker would drop dead letters. A
# limit no read reaches keeps them on every version (3.x refuses -1, 4.x's "off").
UNREACHED_DELIVERY_LIMIT = 2**31 - 1


def compile_topology(spec: TopologySpec) -> BrokerObjects:
    """Turn the spec into exchanges, queues, bindings and policies."""
    out = BrokerObjects()
    _compile_entry(spec, out)
    for name, downstream in spec.downstreams.items():
        _compile_downstream(spec, name, downstream, out)
    return out


def _compile_entry(spec: TopologySpec, out: BrokerObjects) -> None:
    ex, log = spec.exchange, spec.log
    out.add(ExchangeDef(ex.name, "topic", {"alternate-exchange": ex.alternate_exchange}))
    out.add(ExchangeDef(ex.alternate_exchange, "fanout"))
    quorum = _queue_args(QueueType.QUORUM, spec.replication)
    out.add(QueueDef(ex.alternate_exchange, quorum))
    out.add(BindingDef(ex.alternate_exchange, ex.alternate_exchange, "queue", ""))
    out.add(QueueDef(log.name, _stream_args(spec.replication)))
    for key in log.routing_keys:
        out.add(BindingDef(ex.name, log.name, "queue", key))
    out.add(
        PolicyDef(
            log.name,
            _exact(log.name),
            {
                "max-age": f"{log.max_age // 1000}s",
                "max-length-bytes": log.max_length_bytes,
                "stream-max-segment-size-bytes": log.max_segment_size_bytes,
            },
        )
    )


def _compile_downstream(spec: TopologySpec, d: str, ds: DownstreamSpec, out: BrokerObjects) -> None:
    qtype = _queue_args(ds.queue_type, spec.replication_of(d))
    hash_ex = names.hash_exchange(d)
    out.add(ExchangeDef(hash_ex, "x-consistent-hash", {"hash-header": HASH_HEADER}))
    for key in ds.routing_keys:
        out.add(BindingDef(spec.exchange.name, hash_ex, "exchange", key))
    for i in range(ds.shards):
        out.add(QueueDef(names.shard(d, i), {**qtype, "x-single-active-consumer": True}))
        out.add(BindingDef(hash_ex, names.shard(d, i), "queue", SHARD_WEIGHT))
    out.add(PolicyDef(f"{d}.shards", names.shard_pattern(d), _shard_policy(d, ds)))

    retry_ex = names.retry_exchange(d)
    out.add(ExchangeDef(retry_ex, "direct"))
    for tier in ds.retry.tiers:
        queue = names.retry_queue(d, tier)
        out.add(QueueDef(queue, dict(qtype)))
        out.add(BindingDef(retry_ex, queue, "queue", tier))
        out.add(PolicyDef(queue, _exact(queue), _tier_policy(ds)))

    dead_ex, dlq = names.dead_exchange(d), names.dlq(d)
    out.add(ExchangeDef(dead_ex, "fanout"))
    out.add(QueueDef(dlq, dict(qtype)))
    out.add(BindingDef(dead_ex, dlq, "queue", ""))
    if ds.queue_type is QueueType.QUORUM:
        out.add(PolicyDef(dlq, _exact(dlq), {"delivery-limit": UNREACHED_DELIVERY_LIMIT}))


def _tier_policy(ds: DownstreamSpec) -> JsonDict:
    # No TTL and no dead-letter exchange: the workers' forwarders bring each copy back to its
    # shard when its x-retry-at is due. 3.10's quorum dead-letter worker keeps re-sending to a
    # node that is down, which stalled every retry behind it until the node returned.
    definition: JsonDict = {"overflow": "reject-publish"}
    if ds.queue_type is QueueType.QUORUM:
        # A forwarder's closed channel gives back what it held; 4.x's default limit of 20
        # would drop a copy given back that often (there is nowhere to dead-letter it).
        definition["delivery-limit"] = UNREACHED_DELIVERY_LIMIT
    return definition


def _queue_args(queue_type: QueueType, replication: ReplicationSpec) -> JsonDict:
    args: JsonDict = {"x-queue-type": queue_type.value}
    if queue_type is QueueType.QUORUM:
        if replication.group_size is not None:
            args[GROUP_SIZE_ARG] = replication.group_size
        args[LEADER_LOCATOR_ARG] = replication.leader_locator.value
    return args


def _stream_args(replication: ReplicationSpec) -> JsonDict:
    args: JsonDict = {"x-queue-type": "stream"}
    if replication.group_size is not None:
        args[STREAM_REPLICAS_ARG] = replication.group_size
    args[LEADER_LOCATOR_ARG] = replication.leader_locator.value
    return args


def _shard_policy(d: str, ds: DownstreamSpec) -> JsonDict:
    definition: JsonDict = {"dead-letter-exchange": names.dead_exchange(d)}
    if ds.queue_type is QueueType.QUORUM:
        # No limit in the file means none on every broker version, not 4.x's default of 20.
        definition["delivery-limit"] = (
            UNREACHED_DELIVERY_LIMIT if ds.delivery_limit is None else ds.delivery_limit
        )
    if ds.max_length is not None:
        definition["max-length"] = ds.max_length
    definition |= _safe_dead_lettering(ds.queue_type, ds.overflow)
    return definition


def _safe_dead_lettering(queue_type: QueueType, overflow: str) -> JsonDict:
    # Quorum queues dead-letter at-least-once only with reject-publish overflow;
    # otherwise the broker silently falls back to at-most-once.
    if queue_type is QueueType.QUORUM and overflow == "reject-publish":
        return {"overflow": overflow, "dead-letter-strategy": "at-least-once"}
    return {"overflow": overflow}


def _exact(name: str) -> str:
    return "^" + name.replace(".", r"\.") + "$"
