"""A message that kills its worker every time (no handler can catch it) stops at the shard's
delivery limit: the broker dead-letters it, the restarted worker goes on, nothing else is lost
or applied twice. On the suite's broker and on the version compose pins."""

from __future__ import annotations

import asyncio
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from events import LineItem
from operations.dlq import DeadLetters
from producer.api import created
from simulation.launch import simulated_worker_command
from simulation.skus import CRASH_PREFIX
from tests.support import topologies
from tests.support.amqp import publish_events
from tests.support.factories import order_events
from tests.support.fixtures import BROKERS, Vhost
from tests.support.polling import eventually
from tests.support.workers import by_order, store_inbox
from topology import names
from workers.process.launch import worker_env

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("vhost", BROKERS, indirect=True)]
D = "inventory"
LIMIT = 3


async def test_a_worker_killing_message_is_dead_lettered_at_the_delivery_limit(
    vhost: Vhost, tmp_path: Path, topology_file: Any
) -> None:
    data = topologies.fast_data()
    data["downstreams"] = {D: {**data["downstreams"][D], "delivery_limit": LIMIT}}
    data["downstreams"][D]["retry"]["max_deferrals"] = 5
    vhost.apply(topologies.spec_of(data))
    env = worker_env(vhost.amqp_url, topology_file(data), tmp_path / "stores")
    store = tmp_path / "stores" / f"{D}.db"
    deaths = 0

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(simulated_worker_command(D), env=env)

    healthy = {f"ok-{i}": order_events(f"ok-{i}") for i in range(10)}
    crash = created(
        "crash-1", "c-1", [LineItem(sku=f"{CRASH_PREFIX}SKU-1", qty=1, price=Decimal(1))]
    )
    worker = start()
    try:
        await publish_events(vhost.amqp_url, [e for o in healthy.values() for e in o])

        def applied(orders: dict[str, Any]) -> dict[str, list[int]] | None:
            seqs = by_order(store_inbox(store))
            return seqs if all(seqs.get(o) == [1, 2, 3] for o in orders) else None

        await eventually(lambda: applied(healthy), within=60, what="the healthy orders applied")
        await publish_events(vhost.amqp_url, [crash])

        async def dead_lettered() -> list[tuple[str, str]] | None:
            nonlocal worker, deaths
            if worker.poll() is not None:  # killed by the message: restart it, as a supervisor
                assert worker.returncode == -9, f"the worker exited with {worker.returncode}"
                deaths += 1
                worker = start()
            async with DeadLetters(vhost.amqp_url, D, idle=1.0) as dead:
                found = [(m.order_id, m.reason) for m in dead.messages]
            return found or None

        found = await eventually(dead_lettered, within=120, what="the crash dead-lettered")
        assert found == [("crash-1", "delivery-limit")]
        # The broker dead-letters a message returned more than the limit's times: it is delivered
        # LIMIT + 1 times; the last death may land after the dead letter was seen.
        assert LIMIT <= deaths <= LIMIT + 1, f"{deaths} deaths for a delivery limit of {LIMIT}"

        # The worker goes on: a later order applies, nothing applied twice, the crash never.
        later = {"ok-later": order_events("ok-later")}
        await publish_events(vhost.amqp_url, list(later["ok-later"]))
        seqs = await eventually(lambda: applied(later), within=60, what="a later order applied")
        assert "crash-1" not in seqs
        assert all(seqs[o] == [1, 2, 3] for o in [*healthy, *later])
        assert worker.poll() is None
    finally:
        worker.terminate()
        await asyncio.to_thread(worker.wait, 30)
    depth = vhost.client.queue(vhost.name, names.dlq(D))
    assert depth is not None
