"""A replay into every downstream after the workers restart (their caches cold), over orders
that are parked: every store's effects are what they were, the parked order stays parked and
unapplied, and each replayed event is recognised as already applied or parks again."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from operations.cli import main
from tests.support.amqp import publish_events
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.workers import by_order, inbox_counts, metric, running_workers
from topology.spec import TopologySpec

pytestmark = pytest.mark.integration
ORDERS = 40
# Each downstream's own tables, as they stand: replaying must leave them exactly so.
_TABLES = {
    "inventory": "SELECT sku, on_hand, reserved, backordered FROM stock ORDER BY sku",
    "loyalty": "SELECT customer_id, points FROM points ORDER BY customer_id",
    "recommendations": "SELECT sku_a, sku_b, count FROM copurchase ORDER BY sku_a, sku_b",
    "warehouse": "SELECT event_id, payload FROM facts ORDER BY event_id",
    "fraud_audit": "SELECT event_id, event_type FROM audit ORDER BY event_id",
}


def _effects(stores: Path) -> dict[str, list[Any]]:
    out = {}
    for d, query in _TABLES.items():
        with sqlite3.connect(stores / f"{d}.db") as db:
            out[d] = db.execute(query).fetchall()
    return out


async def test_a_replay_into_every_downstream_after_a_restart_changes_no_effect(
    vhost: Vhost,
    fast_spec: TopologySpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    vhost.apply(fast_spec)
    vhost.env(monkeypatch)
    healthy = [order_events(f"o-{i:02d}", sku=f"SKU-{i % 7}") for i in range(ORDERS)]
    poisoned = order_events("o-poison", sku="POISON-SKU-1")
    downstreams = list(fast_spec.downstreams)
    async with running_workers(vhost.amqp_url, fast_spec, tmp_path) as workers:
        await publish_events(vhost.amqp_url, [e for o in [*healthy, poisoned] for e in o])

        async def applied() -> bool:
            return all(n == 3 * ORDERS for n in (await inbox_counts(workers)).values())

        await eventually(applied, within=60, what="every healthy order applied everywhere")
    before = _effects(tmp_path)
    assert all(before.values())

    # The workers start again with nothing in memory; each downstream is replayed in full.
    async with running_workers(vhost.amqp_url, fast_spec, tmp_path) as workers:
        for d in downstreams:
            capsys.readouterr()
            code = await asyncio.to_thread(main, ["replay", d, "--since", "10m"])
            assert code == 0, capsys.readouterr().err
            assert f"replayed {3 * ORDERS + 3} event(s) to {d}" in capsys.readouterr().out

        def recognised() -> bool:
            # Every healthy event came back and was known as applied; the poisoned order's
            # three went to the DLQ again (its first fails again, the others wait behind it).
            return all(
                metric(workers, "bus_worker_duplicates_total", d) == 3 * ORDERS
                and metric(workers, "bus_worker_consumed_total", d) == 3 * ORDERS + 3
                and metric(workers, "bus_worker_in_flight", d) == 0
                for d in downstreams
            )

        await eventually(recognised, within=60, what="every replayed event settled")
        assert all(metric(workers, "bus_worker_applied_total", d) == 0 for d in downstreams)
        for worker in workers.workers:
            seqs = by_order(await worker.store.inbox_rows())
            assert "o-poison" not in seqs and len(seqs) == ORDERS, worker.name
            progress = await worker.store.load_progress(["o-poison"])
            assert progress["o-poison"].parked_event_id == str(poisoned[0].event_id)
    assert _effects(tmp_path) == before
