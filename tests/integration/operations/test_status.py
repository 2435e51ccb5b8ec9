"""`python -m topology status` on a prepared backlog."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from operations.cli import main
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
        assert code == 3 and len(report["downstreams"]) == 5
        code, _ = await _status(vhost, monkeypatch, capsys, "--fail-over-lag", "300")
        assert code == 0


async def _applied(workers: Any, n: int) -> bool:
    return len(await workers.workers[0].store.inbox_rows()) == n
