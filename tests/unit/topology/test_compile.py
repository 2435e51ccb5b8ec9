"""Compile: the file becomes the exchanges, queues, bindings and policies of DESIGN.md."""

from __future__ import annotations

from tests.support import topologies
from topology import names
from topology.compile import UNREACHED_DELIVERY_LIMIT, compile_topology
from topology.spec import DEFAULT_TOPOLOGY_FILE, load_spec


def test_entry_objects() -> None:
    objects = compile_topology(load_spec(DEFAULT_TOPOLOGY_FILE))
    orders = objects.exchanges["orders"]
    assert (orders.type, orders.durable, orders.arguments) == (
        "topic",
        True,
        {"alternate-exchange": "orders.unroutable"},
    )
    assert objects.exchanges["orders.unroutable"].type == "fanout"
    assert objects.queues["orders.unroutable"].queue_type == "quorum"
    assert objects.queues["orders.log"].arguments == {
        "x-queue-type": "stream",
        "x-initial-cluster-size": 3,
        "x-queue-leader-locator": "balanced",
    }
    assert ("orders", "queue", "orders.log", "order.#", ()) in objects.bindings
    assert objects.policies["orders.log"].definition == {
        "max-age": "604800s",
        "max-length-bytes": 10**9,
        "stream-max-segment-size-bytes": 100 * 10**6,
    }


def test_downstream_objects() -> None:
    spec = load_spec(DEFAULT_TOPOLOGY_FILE)
    objects = compile_topology(spec)
    for d, ds in spec.downstreams.items():
        hash_ex = objects.exchanges[d]
        assert (hash_ex.type, hash_ex.arguments) == (
            "x-consistent-hash",
            {"hash-header": "order_id"},
        )
        assert ("orders", "exchange", d, "order.#", ()) in objects.bindings
        shards = [q for q in objects.queues if q.startswith(d + ".") and q[len(d) + 1 :].isdigit()]
        assert shards == [f"{d}.{i}" for i in range(ds.shards)]
        for shard in shards:
            assert objects.queues[shard].arguments == {
                "x-queue-type": "quorum",
                "x-quorum-initial-group-size": 3,
                "x-queue-leader-locator": "balanced",
                "x-single-active-consumer": True,
            }
            assert (d, "queue", shard, "1", ()) in objects.bindings
        assert objects.policies[f"{d}.shards"].pattern == rf"^{d}\.\d+$"
        assert objects.policies[f"{d}.shards"].definition == {
            "dead-letter-exchange": f"{d}.dead",
            "delivery-limit": ds.delivery_limit,
            "max-length": ds.max_length,
            "overflow": "reject-publish",
            "dead-letter-strategy": "at-least-once",
        }
        assert objects.exchanges[f"{d}.retry"].type == "direct"
        for tier in ds.retry.tiers:
            queue = f"{d}.retry.{tier}"
            assert queue in objects.queues
            assert (f"{d}.retry", "queue", queue, tier, ()) in objects.bindings
            policy = objects.policies[queue]
            # The forwarders bring copies back when due: no TTL, no dead-lettering.
            assert "message-ttl" not in policy.definition
            assert "dead-letter-exchange" not in policy.definition
        assert objects.exchanges[f"{d}.dead"].type == "fanout"
        assert (f"{d}.dead", "queue", f"{d}.dlq", "", ()) in objects.bindings


def test_counts_follow_the_file() -> None:
    data = topologies.default_data()
    data["downstreams"] = {"inventory": data["downstreams"]["inventory"]}
    data["downstreams"]["inventory"]["shards"] = 2
    objects = compile_topology(topologies.spec_of(data))
    # orders, orders.unroutable; inventory, .retry, .dead
    assert len(objects.exchanges) == 5
    # orders.unroutable, orders.log; 2 shards, 3 retry tiers, 1 dlq
    assert len(objects.queues) == 2 + 2 + 3 + 1
    # unroutable, log, orders->inventory, 2 shard bindings, 3 tier bindings, dlq
    assert len(objects.bindings) == 2 + 1 + 2 + 3 + 1
    assert sorted(objects.policies) == sorted(
        [
            "orders.log",
            "inventory.shards",
            "inventory.retry.short",
            "inventory.retry.medium",
            "inventory.retry.long",
            "inventory.dlq",
        ]
    )


def test_no_quorum_queue_a_consumer_reads_gets_rabbitmq_4s_default_delivery_limit() -> None:
    data = topologies.default_data()
    data["downstreams"]["loyalty"]["delivery_limit"] = None
    objects = compile_topology(topologies.spec_of(data))
    # The DLQ tools give back what they read: a DLQ's limit is one no read reaches.
    assert objects.policies["inventory.dlq"].definition == {
        "delivery-limit": UNREACHED_DELIVERY_LIMIT
    }
    assert objects.policies["inventory.dlq"].pattern == r"^inventory\.dlq$"
    # A limit the file leaves out is no limit on 4.x as on 3.x, not 4.x's 20.
    assert objects.policies["loyalty.shards"].definition["delivery-limit"] == (
        UNREACHED_DELIVERY_LIMIT
    )
    assert objects.policies["inventory.shards"].definition["delivery-limit"] == 20


def test_classic_and_drop_head_fall_back_to_at_most_once_dead_lettering() -> None:
    data = topologies.default_data()
    inv = data["downstreams"]["inventory"]
    inv.update(queue_type="classic", delivery_limit=None, overflow="drop-head")
    objects = compile_topology(topologies.spec_of(data))
    assert objects.queues["inventory.0"].arguments["x-queue-type"] == "classic"
    assert objects.policies["inventory.shards"].definition == {
        "dead-letter-exchange": "inventory.dead",
        "max-length": inv["max_length"],
        "overflow": "drop-head",
    }


def test_replication_reaches_every_replicated_queue() -> None:
    data = topologies.default_data()
    data["replication"] = {"group_size": 5, "leader_locator": "client-local"}
    data["downstreams"]["warehouse"]["replication"] = {"group_size": None}
    inv = data["downstreams"]["inventory"]
    inv.update(queue_type="classic", delivery_limit=None)
    objects = compile_topology(topologies.spec_of(data))
    for queue in ("orders.unroutable", "loyalty.0", "loyalty.retry.short", "loyalty.dlq"):
        args = objects.queues[queue].arguments
        assert args["x-quorum-initial-group-size"] == 5, queue
        assert args["x-queue-leader-locator"] == "client-local", queue
    assert objects.queues["orders.log"].arguments["x-initial-cluster-size"] == 5
    # group_size null: every node of the cluster; the locator falls back to its default
    warehouse = objects.queues["warehouse.0"].arguments
    assert "x-quorum-initial-group-size" not in warehouse
    assert warehouse["x-queue-leader-locator"] == "balanced"
    # a classic queue has one copy: no replication arguments at all
    for queue in ("inventory.0", "inventory.retry.short", "inventory.dlq"):
        assert objects.queues[queue].arguments["x-queue-type"] == "classic"
        assert not {"x-quorum-initial-group-size", "x-queue-leader-locator"} & set(
            objects.queues[queue].arguments
        ), queue


def test_prune_owns_every_object_compile_makes() -> None:
    spec = topologies.spec_of(topologies.default_data())
    objects = compile_topology(spec)
    entry = {spec.exchange.name, spec.exchange.alternate_exchange, spec.log.name}
    # An object compile makes that the naming scheme does not own could never be pruned.
    assert all(names.owned("queue", q, entry) for q in objects.queues)
    assert all(names.owned("policy", p, entry) for p in objects.policies)
    assert all(names.owned("exchange", n, entry, e.type) for n, e in objects.exchanges.items())
