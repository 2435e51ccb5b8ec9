"""Routing through the applied topology: hashing, per-order shard affinity, stream, retry."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import aio_pika
import pytest
from prometheus_client import CollectorRegistry

from broker.queues import queue_depth
from events import decode, encode
from events import headers as h
from tests.support.amqp import drain, publish_confirmed
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from topology import names
from topology.spec import TopologySpec
from workers.applying.policy import now_ms
from workers.metrics import DownstreamMetrics, WorkerMetrics
from workers.session.forwarder import Forwarder

pytestmark = pytest.mark.integration
ORDERS = 1000


def _interleaved(orders: int, seed: int = 7) -> list[tuple[str, aio_pika.Message]]:
    """Every order's events in seq order, interleaved at random across orders."""
    rng = random.Random(seed)
    queues = {f"ord-{i:05d}": order_events(f"ord-{i:05d}") for i in range(orders)}
    out = []
    while queues:
        order_id = rng.choice(list(queues))
        event = queues[order_id].pop(0)
        if not queues[order_id]:
            del queues[order_id]
        out.append((event.event_type.value, encode(event)))
    return out


async def test_every_downstream_gets_every_event_on_one_shard_per_order_in_seq_order(
    vhost: Vhost, fast_spec: TopologySpec
) -> None:
    vhost.apply(fast_spec)
    connection = await aio_pika.connect(vhost.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=1000)
        published = await publish_confirmed(channel, "orders", _interleaved(ORDERS))
        assert published == ORDERS * 3

        for d, ds in fast_spec.downstreams.items():
            shards = [names.shard(d, i) for i in range(ds.shards)]
            counts = {s: await queue_depth(channel, s) for s in shards}
            assert sum(counts.values()) == ORDERS * 3, f"{d}: {counts}"
            # The hash ring spreads orders: no shard is empty or takes nearly everything.
            assert all(0 < c < ORDERS * 3 * 0.6 for c in counts.values()), f"{d}: {counts}"
            shard_of: dict[str, set[str]] = defaultdict(set)
            seqs: dict[str, list[int]] = defaultdict(list)
            for shard in shards:
                for message in await drain(channel, shard, counts[shard]):
                    event = decode(message)
                    shard_of[event.order_id].add(shard)
                    seqs[event.order_id].append(event.seq)
            assert len(shard_of) == ORDERS
            assert all(len(s) == 1 for s in shard_of.values()), f"{d}: an order spans shards"
            assert all(s == [1, 2, 3] for s in seqs.values()), f"{d}: an order is out of order"

        stream = await drain(
            channel, fast_spec.log.name, ORDERS * 3, arguments={"x-stream-offset": "first"}
        )
        assert len({m.message_id for m in stream}) == ORDERS * 3


async def test_unknown_routing_key_lands_in_unroutable(
    vhost: Vhost, fast_spec: TopologySpec
) -> None:
    vhost.apply(fast_spec)
    connection = await aio_pika.connect(vhost.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        message = aio_pika.Message(b"{}", headers={"order_id": "o-x"}, message_id="lost-1")
        await publish_confirmed(channel, "orders", [("refund.requested", message)])
        [got] = await drain(channel, "orders.unroutable", 1)
        assert got.message_id == "lost-1"
        assert got.routing_key == "refund.requested"
        for d, ds in fast_spec.downstreams.items():
            for i in range(ds.shards):
                assert await queue_depth(channel, names.shard(d, i)) == 0


async def test_a_due_retry_returns_to_the_same_shard_through_the_forwarder(
    vhost: Vhost, fast_spec: TopologySpec
) -> None:
    vhost.apply(fast_spec)
    d = "inventory"
    ds = fast_spec.downstreams[d]
    tier, delay_ms = next(iter(ds.retry.tiers.items()))
    connection = await aio_pika.connect(vhost.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        created, paid, _ = order_events("ord-retry")
        await publish_confirmed(channel, "orders", [("order.created", encode(created))])
        shards = [names.shard(d, i) for i in range(ds.shards)]
        home = [s for s in shards if await queue_depth(channel, s) == 1]
        assert len(home) == 1
        [first] = await drain(channel, home[0], 1)
        assert decode(first) == created

        retry = encode(paid)
        due = now_ms() + delay_ms
        retry.headers = {**(retry.headers or {}), h.ATTEMPTS: 1, h.RETRY_AT: due}
        await publish_confirmed(channel, names.retry_exchange(d), [(tier, retry)])
        await asyncio.sleep(delay_ms / 1000 + 0.5)
        # No TTL: past due, it is still in its tier until a forwarder takes it.
        assert await queue_depth(channel, names.retry_queue(d, tier)) == 1
        metrics = DownstreamMetrics(WorkerMetrics(CollectorRegistry()), d, ds.retry.tiers)
        forwarder = Forwarder(d, ds.retry.tiers, connection, metrics)
        forwarding = asyncio.create_task(forwarder.run())
        try:
            [back] = await drain(channel, home[0], 1, within=10)
        finally:
            forwarding.cancel()
            await asyncio.gather(forwarding, return_exceptions=True)
        assert decode(back) == paid
        assert back.headers["x-attempts"] == 1 and h.RETRY_AT not in back.headers
        assert "x-death" not in back.headers
        assert await queue_depth(channel, names.retry_queue(d, tier)) == 0
        assert all([await queue_depth(channel, s) == 0 for s in shards])
