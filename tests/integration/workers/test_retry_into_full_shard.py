"""A retried copy is due while its shard is full (max-length, reject-publish): it stays in its
tier (no TTL) until a forwarder takes it, and the forwarder's publish, refused while the shard
has no room, is tried again until it is confirmed; so it is applied, in order with its
successors; nothing is lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from aio_pika.exceptions import DeliveryError

from events import encode
from events import headers as h
from tests.support import topologies
from tests.support.amqp import depth, publish_events, publish_to
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.workers import by_order, running_workers
from topology import names

pytestmark = pytest.mark.integration
D = "inventory"
FULL = 48  # the shard's max-length: 16 orders of 3 events


async def test_a_retry_expiring_into_a_full_shard_is_kept_and_delivered_later(
    vhost: Vhost, tmp_path: Path
) -> None:
    data = topologies.fast_data()
    data["downstreams"] = {D: {**data["downstreams"][D], "shards": 1, "max_length": FULL}}
    spec = topologies.spec_of(data)
    vhost.apply(spec)
    shard, tier = names.shard(D, 0), next(iter(spec.downstreams[D].retry.tiers))
    filling = {f"ord-{i:02d}": order_events(f"ord-{i:02d}") for i in range(FULL // 3)}
    await publish_events(vhost.amqp_url, [e for o in filling.values() for e in o])
    # A quorum queue refuses publishes once it is over its max-length: one more gets in.
    over = order_events("ord-over")
    await publish_events(vhost.amqp_url, over[:1])
    with pytest.raises(DeliveryError):
        await publish_events(vhost.amqp_url, over[1:2])
    assert await depth(vhost.amqp_url, shard) == FULL + 1

    # ord-late's created event failed once and waits in the first retry tier; it is due
    # while the shard has no room.
    created, paid, shipped = order_events("ord-late")
    retried = encode(created)
    retried.headers = {**(retried.headers or {}), h.ATTEMPTS: 1, h.RETRY_AT: 0}
    await publish_to(vhost.amqp_url, names.retry_exchange(D), [(tier, retried)])

    async def kept() -> bool:
        # Past due, and still in its tier: no TTL moves it; only a forwarder does.
        ready = await depth(vhost.amqp_url, names.retry_queue(D, tier))
        return ready == 1 and await depth(vhost.amqp_url, shard) == FULL + 1

    await eventually(kept, within=10, what="the due retry kept in its tier")
    async with running_workers(vhost.amqp_url, spec, tmp_path, [D]) as workers:
        store = workers.workers[0].store

        async def drained() -> bool:
            return len(await store.inbox_rows()) >= FULL + 1

        await eventually(drained, within=30, what="the shard drained")
        await publish_events(vhost.amqp_url, [paid, shipped, *over[1:]])

        async def late_applied() -> list[int] | None:
            seqs = by_order(await store.inbox_rows()).get("ord-late")
            return seqs if seqs and len(seqs) == 3 else None

        # The forwarder tries a refused publish again until the shard has room; paid and
        # shipped wait in the store for it meanwhile.
        assert await eventually(late_applied, within=60, what="ord-late applied") == [1, 2, 3]

        async def all_applied() -> dict[str, list[int]] | None:
            seqs = by_order(await store.inbox_rows())
            return seqs if all(len(seqs.get(o, [])) == 3 for o in [*filling, "ord-over"]) else None

        seqs = await eventually(all_applied, within=30, what="every order applied")
        assert all(seqs[o] == [1, 2, 3] for o in [*filling, "ord-over"])
