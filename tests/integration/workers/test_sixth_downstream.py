"""A team adds its own downstream without touching the bus's code: a section in a copy of the
topology file and a handler module outside the project's packages (a folder on PYTHONPATH).
`apply` creates its shards, tiers and DLQ; `python -m workers shipping_notifier` applies every
order's events in order; its handler's retryable and non-retryable errors get the same
retries, parking and DLQ as the shipped handlers'; the other five downstreams do not change."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from events import OrderShipped
from operations.cli import main
from operations.dlq import DeadLetters
from tests.support import topologies
from tests.support.amqp import publish_events
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from topology import names
from topology.apply import plan_against
from topology.compile import compile_topology
from topology.plan import Action
from workers.process.launch import worker_command, worker_env

pytestmark = pytest.mark.integration
D = "shipping_notifier"
HANDLER = '''
"""The shipping team's handler: one notification per shipped order."""

from sqlalchemy import BigInteger, Column, MetaData, String, Table

from events import OrderCreatedEvent, OrderShippedEvent
from workers.api import Handler, NonRetryableError, TransientError

_NOTIFY = (
    "INSERT INTO notifications (order_id, carrier, tracking, customer_id) "
    "SELECT ?, ?, ?, customer_id FROM customers WHERE order_id = ?"
)


class ShippingNotifier(Handler):
    name = "shipping_notifier"

    def define_tables(self, metadata: MetaData) -> None:
        Table("customers", metadata, Column("order_id", String(64), primary_key=True),
              Column("customer_id", String(200), nullable=False))
        Table("notifications", metadata, Column("order_id", String(64), primary_key=True),
              Column("carrier", String(200), nullable=False),
              Column("tracking", String(200), nullable=False),
              Column("customer_id", String(200), nullable=False))

    async def check(self, event, attempts):
        if isinstance(event, OrderShippedEvent):
            if event.payload.carrier == "NOWHERE":
                raise NonRetryableError("no such carrier: NOWHERE")
            if event.order_id.startswith("flaky-") and attempts < 2:
                raise TransientError("the mail service is busy")

    def write(self, tx, events):
        tx.executemany(
            "INSERT INTO customers (order_id, customer_id) VALUES (?, ?)",
            [(e.order_id, e.payload.customer_id) for e in events
             if isinstance(e, OrderCreatedEvent)],
        )
        tx.executemany(
            _NOTIFY,
            [(e.order_id, e.payload.carrier, e.payload.tracking_number, e.order_id) for e in events
             if isinstance(e, OrderShippedEvent)],
        )
'''


def _cli(vhost: Vhost, monkeypatch: pytest.MonkeyPatch, path: Path, *args: str) -> int:
    vhost.env(monkeypatch)
    return main(["--file", str(path), *args])


async def test_a_sixth_downstream_with_its_own_handler_outside_the_project(
    vhost: Vhost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, topology_file: Any
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "shipping_notifier_handler.py").write_text(textwrap.dedent(HANDLER))
    data = topologies.fast_data()
    five = topologies.spec_of(data)
    vhost.apply(five)
    data["downstreams"][D] = {
        "handler": "shipping_notifier_handler:ShippingNotifier",
        "routing_keys": ["order.#"],
        "shards": 2,
        "retry": {"tiers": {"soon": "200ms", "later": "400ms"}, "max_attempts": 3},
    }
    six = topologies.spec_of(data)
    path = topology_file(data)

    # The five downstreams' objects are the same with the sixth in the file.
    before, after = compile_topology(five), compile_topology(six)
    assert {q: after.queues[q] for q in before.queues} == before.queues
    assert {p: after.policies[p] for p in before.policies} == before.policies
    assert await asyncio.to_thread(_cli, vhost, monkeypatch, path, "apply") == 0
    live = {q["name"] for q in vhost.client.list_objects("queues", vhost.name)}
    assert {names.shard(D, 0), names.shard(D, 1), names.dlq(D)} <= live
    assert {names.retry_queue(D, "soon"), names.retry_queue(D, "later")} <= live
    # Against the five's file, the broker differs only by the sixth's objects.
    plan = plan_against(vhost.client, five, compile_topology(five), vhost.name)
    assert plan.changes and all(c.action is Action.EXTRA and D in c.name for c in plan.changes), [
        (c.action, c.kind, c.name) for c in plan.changes if D not in c.name
    ]

    orders = {f"ord-{i:02d}": order_events(f"ord-{i:02d}") for i in range(20)}
    orders["flaky-1"] = order_events("flaky-1")
    nowhere = order_events("nowhere-1")
    nowhere[2] = nowhere[2].model_copy(
        update={"payload": OrderShipped(carrier="NOWHERE", tracking_number="T-1")}
    )
    orders["nowhere-1"] = nowhere
    env = worker_env(
        vhost.amqp_url, path, tmp_path / "stores",
        extra={"PYTHONPATH": str(plugins)},
    )  # fmt: skip
    proc = subprocess.Popen(worker_command(D), env=env)
    try:
        await publish_events(vhost.amqp_url, [e for o in orders.values() for e in o])
        store = tmp_path / "stores" / f"{D}.db"

        def notified() -> dict[str, tuple[str, ...]] | None:
            assert proc.poll() is None, f"the worker exited with {proc.returncode}"
            rows = _query(store, "SELECT order_id, carrier, customer_id FROM notifications")
            return {r[0]: r[1:] for r in rows} if len(rows) == 21 else None

        found = await eventually(notified, within=60, what="21 orders notified")
        assert found["flaky-1"] == ("DHL", "cust-flaky-1") and "nowhere-1" not in found
        applied = _query(store, "SELECT order_id, seq FROM inbox ORDER BY applied_at_us")
        seqs: dict[str, list[int]] = {}
        for order_id, seq in applied:
            seqs.setdefault(order_id, []).append(seq)
        assert all(seqs[o] == [1, 2, 3] for o in orders if o != "nowhere-1")
        assert seqs["nowhere-1"] == [1, 2]

        async def parked() -> list[tuple[int, str, int]] | None:
            async with DeadLetters(vhost.amqp_url, D) as dead:
                got = [(m.seq, m.reason, m.headers.get("x-attempts", 0)) for m in dead.messages]
            return got or None

        assert await eventually(parked, what="the NOWHERE shipment parked") == [
            (3, "non-retryable", 1)
        ]
        progress = _query(store, "SELECT parked_event_id FROM order_progress WHERE order_id = ?",
                          ("nowhere-1",))  # fmt: skip
        assert progress == [(str(nowhere[2].event_id),)]
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    # The five's shards hold every event, untouched by the sixth's worker.
    for d in five.downstreams:
        depth = sum(
            int((vhost.client.queue(vhost.name, names.shard(d, i)) or {}).get("messages") or 0)
            for i in range(five.downstreams[d].shards)
        )
        assert depth <= 3 * len(orders)


def _query(store: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if not store.exists():
        return []
    with sqlite3.connect(store) as db:
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            return []  # the worker has not created its tables yet
