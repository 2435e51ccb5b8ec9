"""`python -m topology capacity` measures a draining downstream and does the arithmetic."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from operations.cli import main
from tests.support import topologies
from tests.support.amqp import publish_events
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.workers import running_workers

pytestmark = pytest.mark.integration


async def test_capacity_measures_the_drain_rate_per_process(
    vhost: Vhost,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = topologies.fast_data()
    # Slow enough to drain for a while: 4 shards x 2 lanes / 5 ms = 1,600 events/s at most.
    data["downstreams"] = {
        "inventory": {**data["downstreams"]["inventory"], "handler_time": "5ms", "concurrency": 2}
    }
    spec = topologies.spec_of(data)
    vhost.apply(spec)
    vhost.env(monkeypatch)
    await publish_events(vhost.amqp_url, [e for i in range(4000) for e in order_events(f"c-{i}")])
    async with running_workers(vhost.amqp_url, spec, tmp_path, ["inventory"]):

        async def measured() -> dict[str, Any] | None:
            capsys.readouterr()
            args = ["capacity", "inventory", "--backlog", "10M", "--within", "1h", "--json"]
            code = await asyncio.to_thread(main, args)
            out = capsys.readouterr().out
            report: dict[str, Any] = json.loads(out) if code == 0 else {}
            return report if report.get("per_process", 0) > 0 else None

        report = await eventually(measured, within=40, every=1, what="a measured drain rate")
    assert report["processes_now"] == 1 and report["shards_now"] == 4
    assert report["per_process"] <= 1600 * 1.2
    needed, each = report["needed_per_s"], report["per_process"]
    assert report["processes"] - 1 < needed / each <= report["processes"]
    assert report["needed_per_s"] >= 10_000_000 / 3600


def test_nothing_draining_asks_for_a_rate(
    vhost: Vhost, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    vhost.apply(topologies.spec_of(topologies.fast_data()))
    vhost.env(monkeypatch)
    assert main(["capacity", "loyalty", "--backlog", "1M"]) == 1
    err = capsys.readouterr().err
    assert "give --per-process" in err and "Traceback" not in err
