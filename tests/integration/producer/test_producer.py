"""The order service: outbox transactions, and the relay under crashes, nacks and drops."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from sqlalchemy import func, select

from broker.queues import queue_depth
from events import IllegalTransition, LineItem, OrderState, PaymentMethod, decode
from events.codec import message_for
from producer.db import make_engine, outbox
from producer.outbox import Outbox
from producer.relay import Relay
from simulation.orders import OrderStore, UnknownOrder
from simulation.traffic import run_traffic
from tests.support import topologies
from tests.support.amqp import collect_ids
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.processes import free_port
from tests.support.producer import (
    outbox_ids,
    running_relay,
    store_engine,
    wait_for_backlog,
)
from topology import names
from topology.spec import TopologySpec

pytestmark = pytest.mark.integration
ITEMS = [LineItem(sku="SKU-1", qty=2, price=Decimal("4.50"))]


async def _outbox_count(engine: Any) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(outbox)) or 0)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_each_transition_writes_one_outbox_row(backend: str, tmp_path: Path) -> None:
    async with store_engine(backend, tmp_path) as engine:
        store = OrderStore(engine)
        created = await store.place_order("cust-1", ITEMS, order_id="o-1")
        paid = await store.pay("o-1", PaymentMethod.PAYPAL)
        shipped = await store.ship("o-1", "UPS", "1Z999")
        assert await store.state_of("o-1") is OrderState.SHIPPED
        assert paid.payload.amount == Decimal("9.00")
        async with engine.connect() as conn:
            rows = (await conn.execute(select(outbox).order_by(outbox.c.id))).all()
        assert [(r.seq, r.event_type) for r in rows] == [
            (1, "order.created"),
            (2, "order.paid"),
            (3, "order.shipped"),
        ]
        assert [r.event_id for r in rows] == [str(e.event_id) for e in (created, paid, shipped)]
        assert all(r.sent_at_ms is None for r in rows)
        for row, event in zip(rows, (created, paid, shipped), strict=True):
            message = message_for(
                row.body,
                event_id=row.event_id,
                event_type=row.event_type,
                order_id=row.order_id,
                seq=row.seq,
                occurred_at=event.occurred_at,
                app_id="t",
            )
            assert decode(message) == event


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_illegal_transitions_raise_and_write_nothing(backend: str, tmp_path: Path) -> None:
    async with store_engine(backend, tmp_path) as engine:
        store = OrderStore(engine)
        await store.place_order("cust-1", ITEMS, order_id="o-1")
        await store.place_order("cust-2", ITEMS, order_id="o-2")
        await store.pay("o-2", PaymentMethod.CARD)
        before = await _outbox_count(engine)
        attempts = [
            (store.ship("o-1", "DHL", "x"), IllegalTransition),  # ship before pay
            (store.pay("o-2", PaymentMethod.CARD), IllegalTransition),  # pay twice
            (store.place_order("cust-1", ITEMS, order_id="o-1"), IllegalTransition),  # create twice
            (store.pay("o-404", PaymentMethod.CARD), UnknownOrder),
        ]
        for call, error in attempts:
            with pytest.raises(error):
                await call
        assert await _outbox_count(engine) == before
        assert await store.state_of("o-1") is OrderState.CREATED
        assert await store.state_of("o-2") is OrderState.PAID
        assert await store.state_of("o-404") is None
        # Racing payments of one order: exactly one wins, one outbox row.
        results = await asyncio.gather(
            *(store.pay("o-1", PaymentMethod.CARD) for _ in range(5)), return_exceptions=True
        )
        assert sum(not isinstance(r, BaseException) for r in results) == 1
        assert all(
            isinstance(r, IllegalTransition) for r in results if isinstance(r, BaseException)
        )
        assert await _outbox_count(engine) == before + 1


def _process_env(vhost: Vhost, db: Path, topology: Path) -> dict[str, str]:
    """Environment for a producer subprocess pointed at this test's vhost and store."""
    return {
        **os.environ,
        "AMQP_URL": vhost.amqp_url,
        "PRODUCER_DSN": f"sqlite+aiosqlite:///{db}",
        "TOPOLOGY_FILE": str(topology),
        "LOG_LEVEL": "WARNING",
    }


async def _scrape(port: int, *names: str, within: float = 10.0) -> dict[str, float]:
    """Read metric values from a process's /metrics once they report the latest figures."""

    async def served() -> dict[str, float] | None:
        try:
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        except httpx.TransportError:
            return None
        values = {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line.split() and line.split()[0] in names
        }
        # The backlog gauge is refreshed every 2s; wait for it to catch up.
        done = len(values) == len(names) and values.get("bus_outbox_backlog", 0) == 0
        return values if done else None

    found: dict[str, float] = await eventually(
        served, within=within, every=0.25, what=f"metrics {names} on port {port}"
    )
    return found


async def _stream_ids(
    vhost: Vhost, spec: TopologySpec, engine: Any, expected: list[str]
) -> dict[str, int]:
    connection = await aio_pika.connect(vhost.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=500)
        seen = await collect_ids(
            channel, spec.log.name, set(expected), arguments={"x-stream-offset": "first"}
        )
    return dict(seen)


async def test_rows_committed_while_no_relay_runs_are_published_when_one_starts(
    vhost: Vhost, fast_spec: TopologySpec, tmp_path: Path
) -> None:
    vhost.apply(fast_spec)
    async with store_engine("sqlite", tmp_path) as engine:
        await run_traffic(OrderStore(engine), 100, seed=11)
        expected = await outbox_ids(engine)
        assert len(expected) == 300
        connection = await aio_pika.connect(vhost.amqp_url)
        async with connection:
            channel = await connection.channel()
            assert await queue_depth(channel, names.shard("inventory", 0)) == 0
        async with running_relay(engine, vhost.amqp_url, fast_spec) as relay:
            await wait_for_backlog(engine)
        assert relay.stats.confirmed == 300
        seen = await _stream_ids(vhost, fast_spec, engine, expected)
        assert set(seen) == set(expected)


async def test_relay_cancelled_mid_window_and_restarted_loses_nothing(
    vhost: Vhost, fast_spec: TopologySpec, tmp_path: Path
) -> None:
    vhost.apply(fast_spec)
    async with store_engine("sqlite", tmp_path) as engine:
        await run_traffic(OrderStore(engine), 1000, seed=12)
        expected = await outbox_ids(engine)
        relay = Relay(Outbox(engine), vhost.amqp_url, exchange="orders", window=128)
        task = asyncio.create_task(relay.run(asyncio.Event()))
        await eventually(lambda: relay.stats.confirmed >= 500, every=0.005, what="500 confirmed")
        task.cancel()  # abrupt: publishes in flight, confirms not yet marked
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await Outbox(engine).backlog() > 0
        async with running_relay(engine, vhost.amqp_url, fast_spec):
            await wait_for_backlog(engine)
        seen = await _stream_ids(vhost, fast_spec, engine, expected)
        assert set(seen) == set(expected)


async def test_relay_process_killed_and_restarted_loses_nothing(
    vhost: Vhost, fast_spec: TopologySpec, tmp_path: Path, topology_file: Any
) -> None:
    vhost.apply(fast_spec)
    env = _process_env(vhost, tmp_path / "orders.db", topology_file(topologies.fast_data()))
    async with store_engine("sqlite", tmp_path) as engine:
        await run_traffic(OrderStore(engine), 1500, seed=13)
        expected = await outbox_ids(engine)
        relay = subprocess.Popen([sys.executable, "-m", "producer", "relay"], env=env)
        try:
            await wait_for_backlog(engine, left=len(expected) - 600, within=60)
        finally:
            relay.send_signal(signal.SIGKILL)
            relay.wait(10)
        assert 0 < await Outbox(engine).backlog() < len(expected)
        port = free_port()
        relay = subprocess.Popen(
            [sys.executable, "-m", "producer", "--metrics-port", str(port), "relay"], env=env
        )
        try:
            await wait_for_backlog(engine, within=60)
            metrics = await _scrape(port, "bus_relay_confirmed_total", "bus_outbox_backlog")
            assert metrics["bus_relay_confirmed_total"] > 0
            assert metrics["bus_outbox_backlog"] == 0
        finally:
            relay.send_signal(signal.SIGTERM)
            assert relay.wait(30) == 0, "the relay did not stop cleanly on SIGTERM"
        seen = await _stream_ids(vhost, fast_spec, engine, expected)
        assert set(seen) == set(expected)


async def test_full_queue_nacks_are_retried_until_everything_arrives(
    vhost: Vhost, tmp_path: Path
) -> None:
    data = topologies.fast_data()
    data["downstreams"] = {
        "inventory": {**data["downstreams"]["inventory"], "shards": 1, "max_length": 25}
    }
    spec = topologies.spec_of(data)
    vhost.apply(spec)
    async with store_engine("sqlite", tmp_path) as engine:
        await run_traffic(OrderStore(engine), 100, seed=14)
        expected = await outbox_ids(engine)
        async with running_relay(engine, vhost.amqp_url, spec, window=32) as relay:
            await eventually(lambda: relay.stats.nacked > 0, every=0.01, what="a nack")
            assert await Outbox(engine).backlog() > 0
            connection = await aio_pika.connect(vhost.amqp_url)
            async with connection:
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=10)
                seen = await collect_ids(channel, names.shard("inventory", 0), set(expected))
            await wait_for_backlog(engine)
        assert set(seen) == set(expected)
        assert relay.stats.nacked > 0
        assert relay.stats.confirmed == len(expected)


async def test_connection_closed_by_the_broker_is_reconnected_and_nothing_is_missing(
    vhost: Vhost, fast_spec: TopologySpec, tmp_path: Path
) -> None:
    vhost.apply(fast_spec)
    async with store_engine("sqlite", tmp_path) as engine:
        store = OrderStore(engine)
        async with running_relay(engine, vhost.amqp_url, fast_spec, window=64) as relay:
            traffic = asyncio.create_task(run_traffic(store, 600, seed=15, rate=100))

            def relay_connections() -> list[dict[str, Any]]:
                return vhost.client.connections(vhost.name)

            conns = await eventually(relay_connections, every=0.25, what="the relay connected")
            assert not traffic.done(), "traffic finished before the connection could be closed"
            for conn in conns:
                vhost.client.close_connection(conn["name"], "test: dropped mid-run")
            await traffic
            await wait_for_backlog(engine)
        assert relay.stats.reconnects >= 1
        expected = await outbox_ids(engine)
        assert len(expected) == 1800
        seen = await _stream_ids(vhost, fast_spec, engine, expected)
        assert set(seen) == set(expected)


async def test_simulate_200_orders_fills_every_downstream_and_the_stream(
    vhost: Vhost, fast_spec: TopologySpec, tmp_path: Path, topology_file: Any
) -> None:
    vhost.apply(fast_spec)
    env = _process_env(vhost, tmp_path / "sim.db", topology_file(topologies.fast_data()))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulation",
            "orders",
            "--orders",
            "200",
            "--seed",
            "3",
            "--flaky-rate",
            "0.1",
            "--poison-rate",
            "0.05",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["orders"], summary["events"], summary["confirmed"]) == (200, 600, 600)
    assert summary["outbox_backlog"] == 0 and summary["flaky_orders"] > 0
    engine = make_engine(env["PRODUCER_DSN"])
    try:
        expected = await outbox_ids(engine)
    finally:
        await engine.dispose()
    assert len(expected) == 600
    connection = await aio_pika.connect(vhost.amqp_url)
    async with connection:
        channel = await connection.channel()
        for d, ds in fast_spec.downstreams.items():
            counts = [await queue_depth(channel, names.shard(d, i)) for i in range(ds.shards)]
            assert sum(counts) == 600, f"{d}: {counts}"
        await channel.set_qos(prefetch_count=500)
        seen = await collect_ids(
            channel, fast_spec.log.name, set(expected), arguments={"x-stream-offset": "first"}
        )
    assert set(seen) == set(expected) and all(n == 1 for n in seen.values())
