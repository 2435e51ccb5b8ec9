"""The consistent-hash exchange on a cluster: every node routes an order to the same shard,
and still does after a node is SIGKILLed and restarted."""

from __future__ import annotations

from collections import Counter

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from common.settings import with_vhost
from tests.support import topologies
from tests.support.amqp import publish_confirmed
from tests.support.cluster import Cluster
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from topology import names
from topology.compile import HASH_HEADER

pytestmark = [pytest.mark.cluster, pytest.mark.integration]
ORDERS = [f"o-{i:05d}" for i in range(400)]
DOWNSTREAM = "inventory"
SHARDS = 8


async def placement(amqp_url: str) -> dict[str, int]:
    """Publish every order id once to the downstream's hash exchange through this node, then
    consume each shard (single active consumer refuses basic.get): the shard of each order."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        messages = [
            ("", aio_pika.Message(b"", headers={HASH_HEADER: o}, message_id=o)) for o in ORDERS
        ]
        await publish_confirmed(channel, names.hash_exchange(DOWNSTREAM), messages)
        seen: list[tuple[str, int]] = []
        for index in range(SHARDS):
            queue = await channel.get_queue(names.shard(DOWNSTREAM, index), ensure=False)

            async def take(message: AbstractIncomingMessage, shard: int = index) -> None:
                seen.append((message.message_id or "", shard))

            await queue.consume(take, no_ack=True)
        await eventually(lambda: len(seen) >= len(ORDERS), what="every order consumed")
    out = dict(seen)
    assert len(out) == len(seen), "an order was routed twice"
    assert sorted(out) == ORDERS, "an order was not routed to any shard"
    return out


async def test_every_order_keeps_its_shard_across_a_node_restart(
    cluster: Cluster, cluster_vhost: Vhost
) -> None:
    data = topologies.fast_data()
    data["downstreams"] = {DOWNSTREAM: data["downstreams"][DOWNSTREAM]}
    data["downstreams"][DOWNSTREAM]["shards"] = SHARDS
    cluster_vhost.apply(topologies.spec_of(data))
    through = {n: with_vhost(cluster.amqp_of(n), cluster_vhost.name) for n in (1, 2, 3)}

    before = {n: await placement(url) for n, url in through.items()}
    assert before[1] == before[2] == before[3], "the nodes route orders differently"
    spread = Counter(before[1].values())
    assert set(spread) == set(range(SHARDS)), f"a shard got no orders: {spread}"

    # SIGKILL the seed node (the one the others joined), then start it again.
    await cluster.act(1, "kill")
    survivors = await placement(through[2])
    await cluster.act(1, "start")
    after = {n: await placement(url) for n, url in through.items()}

    reference = before[1]
    for label, now in [("while bus1 was down", survivors)] + [
        (f"after the restart, through node {n}", p) for n, p in after.items()
    ]:
        moved = {o: (reference[o], now[o]) for o in ORDERS if now[o] != reference[o]}
        assert not moved, (
            f"{label}: {len(moved)} orders moved shard, e.g. {list(moved.items())[:3]}"
        )
