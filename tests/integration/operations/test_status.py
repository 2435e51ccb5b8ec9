"""`python -m topology status` on a prepared backlog."""

from __future__ import annotations

import asyncio
import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from events import headers as h
from operations import status as status_module
from operations.cli import main
from operations.status import ParkedCounts, gather
from tests.support.amqp import publish_events
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.workers import running_workers
from topology.spec import TopologySpec

pytestmark = pytest.mark.integration


async def _status(
    vhost: Vhost, monkeypatch: pytest.MonkeyPatch, capsys: Any, *extra: str
) -> tuple[int, Any]:
    vhost.env(monkeypatch)
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["status", "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


async def test_status_reports_depths_lag_and_alerts(
    vhost: Vhost,
    fast_spec: TopologySpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    vhost.apply(fast_spec)
    # Inventory drains its share; the other four keep a backlog of 300 each.
    async with running_workers(vhost.amqp_url, fast_spec, tmp_path, names=["inventory"]) as ws:
        await publish_events(
            vhost.amqp_url, [e for i in range(100) for e in order_events(f"o-{i}")]
        )
        await eventually(lambda: _applied(ws, 300), what="inventory drained")

        async def settled() -> Any:
            # Unacked counts come from the management API, whose stats lag a few seconds.
            _, report = await _status(vhost, monkeypatch, capsys)
            rows = {r["downstream"]: r for r in report["downstreams"]}
            owned = set(rows["inventory"]["owners"].values()) == {f"worker:inventory:{os.getpid()}"}
            return rows if rows["inventory"]["consumers"] == 4 and owned else None

        rows = await eventually(settled, within=30, what="stats caught up")
        assert rows["inventory"]["ready"] == 0 and rows["inventory"]["lag_messages"] == 0
        assert sorted(rows["inventory"]["owners"]) == [f"inventory.{i}" for i in range(4)]
        assert set(rows["loyalty"]["owners"].values()) == {"-"}  # nothing consumes it
        for d in ("loyalty", "recommendations", "warehouse", "fraud_audit"):
            r = rows[d]
            assert (r["ready"], r["unacked"], r["consumers"], r["lag_messages"]) == (
                300,
                0,
                0,
                300,
            ), d
            assert r["lag_seconds"] is None  # nothing is draining it
            assert r["dlq"] == 0 and r["parked_orders"] == 0 and set(r["retry"].values()) == {0}
            assert r["scale_out"] is (r["scale_out_at"] < 300)

        code, report = await _status(vhost, monkeypatch, capsys, "--fail-over-lag", "299")
        assert code == 5 and len(report["downstreams"]) == 5
        code, _ = await _status(vhost, monkeypatch, capsys, "--fail-over-lag", "300")
        assert code == 0


async def _applied(workers: Any, n: int) -> bool:
    return len(await workers.workers[0].store.inbox_rows()) == n


async def test_a_watch_reads_a_dlq_for_parked_orders_only_when_it_changed(
    vhost: Vhost, fast_spec: TopologySpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    vhost.apply(fast_spec)
    reads: list[str] = []
    real = status_module.parked_orders

    async def counted(amqp_url: str, downstream: str) -> int:
        reads.append(downstream)
        return await real(amqp_url, downstream)

    monkeypatch.setattr(status_module, "parked_orders", counted)
    counts = ParkedCounts()
    refresh = partial(gather, fast_spec, vhost.amqp_url, vhost.client, vhost.name, counts)
    await refresh()
    second = await refresh()
    assert sorted(reads) == sorted(fast_spec.downstreams), "each DLQ read once, not per refresh"
    assert all(r.parked_age_s > 0 for r in second.downstreams)

    # A dead letter that parks its order reaches inventory's DLQ; the count is older than
    # the minimum age: the next refresh reads that DLQ again, and only that one.
    connection = await aio_pika.connect(vhost.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        headers = {h.ORDER_ID: "o-parked", h.SEQ: 1, h.DEAD_REASON: "non-retryable"}
        await channel.default_exchange.publish(
            aio_pika.Message(b"{}", headers=headers), routing_key="inventory.dlq"
        )
    monkeypatch.setattr(status_module, "PARKED_MAX_AGE", 0.0)
    reads.clear()
    third = await refresh()
    assert reads == ["inventory"]
    inventory = next(r for r in third.downstreams if r.downstream == "inventory")
    assert (inventory.parked_orders, inventory.parked_age_s) == (1, 0.0)
