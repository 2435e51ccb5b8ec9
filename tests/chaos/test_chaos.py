"""Producer and five downstreams under load while processes die and connections drop.

Run alone with `pytest -m chaos`. At the end it proves from the outbox, the stores and the
DLQs: every event applied exactly once per downstream, in seq order, poisoned orders
dead-lettered with a reason, nothing missing.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from demo.report import check_store, read_truth
from producer.db import create_schema, make_engine
from producer.simulate import run_traffic
from producer.store import OrderStore
from tests import topologies
from tests.integration.conftest import Vhost
from topology.dlq import DeadLetters

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
ORDERS = 400


class Fleet:
    """The relay and one process per downstream, each killable and restartable."""

    def __init__(self, env: dict[str, str], downstreams: list[str]) -> None:
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.downstreams = downstreams
        self.faults: list[str] = []

    def start(self, name: str) -> None:
        args = ["producer", "relay"] if name == "relay" else ["workers", name]
        self.procs[name] = subprocess.Popen([sys.executable, "-m", *args], env=self.env)

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(10)
        self.faults.append(f"SIGKILL {name}")
        self.start(name)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _chaos(fleet: Fleet, vhost: Vhost, rng: random.Random, until: asyncio.Event) -> None:
    """Inject a fault every second or so until told to stop."""
    while not until.is_set():
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        choice = rng.choice(["relay", "worker", "worker", "connections"])
        if choice == "relay":
            fleet.kill("relay")
        elif choice == "worker":
            fleet.kill(rng.choice(fleet.downstreams))
        else:
            conns = vhost.client.connections(vhost.name)
            for conn in conns:
                vhost.client.close_connection(conn["name"], "chaos")
            fleet.faults.append(f"closed {len(conns)} connection(s)")


async def test_everything_applies_once_in_order_through_faults(
    vhost: Vhost, tmp_path: Path, topology_file: Any
) -> None:
    data = topologies.fast_data()
    spec = topologies.spec_of(data)
    vhost.apply(spec)
    db = tmp_path / "orders.db"
    env = {
        **os.environ,
        "AMQP_URL": vhost.amqp_url,
        "LOG_LEVEL": "ERROR",
        "TOPOLOGY_FILE": str(topology_file(data)),
        "WORKERS_STORE_DIR": str(tmp_path / "stores"),
        "PRODUCER_DSN": f"sqlite+aiosqlite:///{db}",
    }
    names = list(spec.downstreams)
    fleet = Fleet(env, names)
    engine = make_engine(env["PRODUCER_DSN"])
    await create_schema(engine)
    started = time.monotonic()
    try:
        for name in ["relay", *names]:
            fleet.start(name)
        stop = asyncio.Event()
        chaos = asyncio.create_task(_chaos(fleet, vhost, random.Random(5), stop))
        traffic = await run_traffic(
            OrderStore(engine),
            ORDERS,
            seed=99,
            concurrency=4,
            rate=80,
            flaky_rate=0.1,
            poison_rate=0.03,
        )
        stop.set()
        await chaos
        faults_done = time.monotonic()
        truth = read_truth(db)
        expected = 3 * (truth.orders - len(truth.poisoned)) + 3 * len(truth.poisoned)
        await _settle(vhost, tmp_path / "stores", names, expected, within=180)
        recovered = time.monotonic() - faults_done
        dead = {}
        for d in names:
            async with DeadLetters(vhost.amqp_url, d) as letters:
                dead[d] = [(m.order_id, m.reason, m.event_id) for m in letters.messages]
    finally:
        fleet.stop_all()
        await engine.dispose()
    checks = [
        c for d in names for c in check_store(d, tmp_path / "stores" / f"{d}.db", truth, dead[d])
    ]
    print(
        f"\nchaos: {traffic.orders} orders, {traffic.events} events, {len(fleet.faults)} faults "
        f"({', '.join(sorted(set(fleet.faults)))}), settled {recovered:.1f}s after the last fault, "
        f"{time.monotonic() - started:.1f}s in all; dead letters duplicated by crashes: "
        f"{sum(len(v) - len({e for *_, e in v}) for v in dead.values())}"
    )
    failed = [
        f"{c.downstream}: {c.name} expected {c.expected} got {c.actual}" for c in checks if not c.ok
    ]
    assert not failed, failed
    assert len(fleet.faults) >= 3


async def _settle(
    vhost: Vhost, stores: Path, names: list[str], expected: int, within: float
) -> None:
    import sqlite3

    import aio_pika

    from tests.integration.amqp import message_count
    from topology import names as n

    deadline = time.monotonic() + within
    connection = await aio_pika.connect(vhost.amqp_url)
    async with connection:
        channel = await connection.channel()
        while time.monotonic() < deadline:
            done = 0
            for d in names:
                try:
                    with sqlite3.connect(stores / f"{d}.db") as db:
                        applied = db.execute("SELECT count(*) FROM inbox").fetchone()[0]
                except sqlite3.Error:
                    applied = 0
                done += applied + await message_count(channel, n.dlq(d)) >= expected
            if done == len(names):
                await asyncio.sleep(2)  # let stragglers (duplicates) land before judging
                return
            await asyncio.sleep(0.5)
    raise AssertionError("the bus did not settle")
