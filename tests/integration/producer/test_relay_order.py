"""The order the relay produces: read straight from the shards, each order arrives created,
paid, shipped; and a clean run end to end (relay and the five downstreams) defers nothing,
because nothing arrives before its predecessor (the ordering guard would repair it, which
is why its count, not the stores, shows the relay's order)."""

from __future__ import annotations

from pathlib import Path

import aio_pika
import pytest

from broker.queues import queue_depth
from events import headers as h
from simulation.orders import OrderStore
from simulation.traffic import run_traffic
from tests.support.amqp import drain
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.producer import outbox_ids, running_relay, store_engine, wait_for_backlog
from tests.support.workers import counts_are, metric, running_workers, workers_in_order
from topology import names
from topology.spec import TopologySpec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_a_drained_shard_holds_each_order_in_seq_order(
    vhost: Vhost, fast_spec: TopologySpec, tmp_path: Path
) -> None:
    vhost.apply(fast_spec)
    async with store_engine("sqlite", tmp_path) as engine:
        store = OrderStore(engine)
        # Rows waiting when the relay starts (read in large batches), then rows written
        # while it runs (read a few at a time).
        await run_traffic(store, 150, seed=31)
        async with running_relay(engine, vhost.amqp_url, fast_spec):
            await run_traffic(store, 150, seed=32, rate=100)
            await wait_for_backlog(engine)
        expected = len(await outbox_ids(engine))
    d = "inventory"
    arrived: dict[str, list[int]] = {}
    connection = await aio_pika.connect(vhost.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=500)
        for i in range(fast_spec.downstreams[d].shards):
            shard = names.shard(d, i)
            for message in await drain(channel, shard, await queue_depth(channel, shard)):
                headers = message.headers or {}
                arrived.setdefault(h.order_id_of(headers), []).append(h.seq_of(headers))
    assert sum(len(seqs) for seqs in arrived.values()) == expected == 900
    wrong = {o: seqs for o, seqs in arrived.items() if seqs != [1, 2, 3]}
    shown = dict(sorted(wrong.items())[:5])
    assert not wrong, f"the relay published {len(wrong)} order(s) out of seq order: {shown}"


async def test_a_clean_run_defers_nothing(
    vhost: Vhost, fast_spec: TopologySpec, tmp_path: Path
) -> None:
    vhost.apply(fast_spec)
    async with (
        store_engine("sqlite", tmp_path) as engine,
        running_workers(vhost.amqp_url, fast_spec, tmp_path / "stores") as workers,
    ):
        store = OrderStore(engine)
        await run_traffic(store, 60, seed=33)
        async with running_relay(engine, vhost.amqp_url, fast_spec):
            await run_traffic(store, 90, seed=34, rate=60)
            await wait_for_backlog(engine)
        expected = {d: 450 for d in fast_spec.downstreams}
        await eventually(
            lambda: counts_are(workers, expected),
            within=90,
            what="every event applied everywhere",
            always=workers_in_order(workers),
        )
        deferred = {d: metric(workers, "bus_worker_deferred_total", d) for d in expected}
    assert not any(deferred.values()), (
        f"events deferred in a clean run (an event arrived before its predecessor): {deferred}"
    )
