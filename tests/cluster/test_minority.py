"""A majority of the cluster down: nothing is confirmed, so the relay marks nothing sent and
loses nothing; when the majority returns it catches up."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from common.settings import with_vhost
from producer.db import create_schema, make_engine
from simulation.orders import OrderStore
from simulation.traffic import run_traffic
from tests.support import topologies
from tests.support.cluster import Cluster
from tests.support.fixtures import Vhost
from tests.support.fleet import Fleet
from tests.support.polling import eventually
from tests.support.settling import in_stream, outbox_ids, unsent
from workers.process.launch import worker_env

pytestmark = [pytest.mark.cluster, pytest.mark.integration]
HELD_FOR = 15.0  # seconds the relay must hold its rows while the majority is down


async def test_a_majority_down_holds_the_outbox_and_the_relay_catches_up(
    cluster: Cluster, cluster_vhost: Vhost, tmp_path: Path, topology_file: Any
) -> None:
    data = topologies.fast_data()
    spec = topologies.spec_of(data)
    cluster_vhost.apply(spec)
    db = tmp_path / "orders.db"
    env = worker_env(
        cluster_vhost.amqp_url,
        topology_file(data),
        tmp_path / "stores",
        log_level="INFO",
        extra={
            "LOG_JSON": "true",
            "PRODUCER_DSN": f"sqlite+aiosqlite:///{db}",
            "RABBITMQ_MANAGEMENT_URL": cluster.management_url,
        },
    )
    fleet = Fleet(env, [], tmp_path / "logs")
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    await create_schema(engine)
    store = OrderStore(engine)
    try:
        fleet.start("relay")
        await run_traffic(store, 20, seed=1, concurrency=4)
        await eventually(lambda: unsent(db) == 0, within=60, what="the relay sending")

        # Only bus1 stays: one member of three is no majority for any shard or the log.
        await cluster.act(2, "stop-app")
        await cluster.act(3, "stop-app")
        one_node = with_vhost(cluster.amqp_of(1), cluster_vhost.name)
        connection = await aio_pika.connect(one_node)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(spec.exchange.name, ensure=False)
            probe = aio_pika.Message(b"{}", headers={"order_id": "minority-probe"})
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(exchange.publish(probe, "order.created"), timeout=5)

        stats = await run_traffic(store, 20, seed=2, concurrency=4)
        await asyncio.sleep(HELD_FOR)
        fleet.assert_alive()
        held = unsent(db)
        assert held == stats.events, f"{stats.events - held} rows marked sent with no majority"

        back = time.monotonic()
        await cluster.act(2, "start-app")
        await eventually(lambda: unsent(db) == 0, within=90, what="the relay catching up")
        print(
            f"\nminority: {held} rows held unsent for {HELD_FOR:.0f}s with two nodes stopped; "
            f"all sent {time.monotonic() - back:.1f}s after starting the second node's app"
        )
        fleet.assert_alive()
        assert await in_stream(cluster_vhost.amqp_url, spec.log.name, outbox_ids(db)), (
            "an outbox event is missing from the stream"
        )
        await cluster.act(3, "start-app")
    finally:
        fleet.stop_all()
        await engine.dispose()
