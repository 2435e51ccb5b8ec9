"""`python -m topology replay`: one downstream only, idempotent, and rebuilding a wiped store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from tests.factories import order_events
from tests.integration.conftest import Vhost
from tests.integration.worker_fixtures import publish_events, running_workers, wait_for
from topology.cli import main
from topology.spec import TopologySpec

pytestmark = pytest.mark.integration


def _metric(workers: Any, name: str, downstream: str) -> float:
    return workers.registry.get_sample_value(name, {"downstream": downstream}) or 0.0


async def _snapshot(worker: Any) -> tuple[Any, Any]:
    inbox = {(r.event_id, r.order_id, r.seq) for r in await worker.store.inbox_rows()}
    stock = worker.handler.stock
    return inbox, sorted(await worker.store.query(select(stock)))


async def test_replay_one_downstream_idempotent_then_rebuild(
    vhost: Vhost,
    fast_spec: TopologySpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    vhost.apply(fast_spec)
    vhost.env(monkeypatch)
    async with running_workers(
        vhost.amqp_url, fast_spec, tmp_path, names=["inventory", "loyalty"]
    ) as ws:
        inventory = ws.workers[0]
        await publish_events(
            vhost.amqp_url, [e for i in range(30) for e in order_events(f"o-{i:02d}")]
        )
        await wait_for(lambda: _applied(ws, 90), what="both applied")
        original = await _snapshot(inventory)
        consumed_loyalty = _metric(ws, "bus_worker_consumed_total", "loyalty")

        # Replay into inventory only: every event arrives again and is recognised.
        code = await asyncio.to_thread(main, ["replay", "inventory", "--since", "10m"])
        assert code == 0
        assert "replayed 90 event(s) to inventory" in capsys.readouterr().out
        await wait_for(
            lambda: _at_least(ws, "bus_worker_duplicates_total", "inventory", 90), what="dedup"
        )
        assert await _snapshot(inventory) == original
        assert _metric(ws, "bus_worker_consumed_total", "loyalty") == consumed_loyalty

        # The store is wiped under the running worker; --reapply rebuilds it equal.
        def wipe() -> None:
            with inventory.store.engine.begin() as conn:
                for table in (
                    inventory.store.inbox,
                    inventory.store.progress,
                    inventory.handler.stock,
                ):
                    conn.execute(delete(table))

        await inventory.store.run(wipe)
        code = await asyncio.to_thread(main, ["replay", "inventory", "--since", "10m", "--reapply"])
        assert code == 0
        await wait_for(lambda: _inventory_rows(inventory, 90), what="rebuilt")
        await asyncio.sleep(0.5)
        assert await _snapshot(inventory) == original
        assert _metric(ws, "bus_worker_consumed_total", "loyalty") == consumed_loyalty

        # A replay of one order, and a bad time, are handled too.
        assert (
            await asyncio.to_thread(
                main, ["replay", "inventory", "--since", "10m", "--order-id", "o-07"]
            )
            == 0
        )
        assert "replayed 3 event(s)" in capsys.readouterr().out
        assert await asyncio.to_thread(main, ["replay", "inventory", "--since", "yesterday"]) == 1
        assert "neither a time" in capsys.readouterr().err


async def _applied(ws: Any, n: int) -> bool:
    return all([len(await w.store.inbox_rows()) == n for w in ws.workers])


async def _inventory_rows(worker: Any, n: int) -> bool:
    return len(await worker.store.inbox_rows()) == n


async def _at_least(ws: Any, name: str, downstream: str, n: int) -> bool:
    return _metric(ws, name, downstream) >= n
