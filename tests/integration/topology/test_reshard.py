"""Changing a downstream's shard count live, on the broker: what moves, in what order."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bench.ring import moved, ring
from operations.cli import main
from tests.support import topologies
from tests.support.amqp import depth, publish_events
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.workers import by_order, running_workers
from topology import names

pytestmark = pytest.mark.integration
ORDERS = [f"o-{i:05d}" for i in range(2000)]


def _cli(vhost: Vhost, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    vhost.env(monkeypatch)
    return main(list(args))


async def test_each_new_shard_takes_about_one_in_n_plus_one_orders_all_from_the_others(
    vhost: Vhost,
) -> None:
    # The hash exchange's ring grows by appending: a probe ring bound the same way routes
    # every order id as the downstream's exchange does (see tests/support/ring.py).
    rings = {n: await ring(vhost.amqp_url, ORDERS, list(range(n))) for n in range(4, 9)}
    for n in range(4, 8):
        shifted = moved(rings[n], rings[n + 1])
        assert {to for _, to in shifted.values()} == {n}, "every moved order went to the new one"
        share = len(shifted) / len(ORDERS)
        assert abs(share - 1 / (n + 1)) < 0.05, (n, share)


async def test_removing_the_newest_shard_moves_only_its_orders_and_an_older_one_moves_more(
    vhost: Vhost,
) -> None:
    eight = await ring(vhost.amqp_url, ORDERS, list(range(8)))
    newest_gone = await ring(vhost.amqp_url, ORDERS, list(range(7)))
    middle_gone = await ring(vhost.amqp_url, ORDERS, [0, 1, 3, 4, 5, 6, 7])
    from_newest = moved(eight, newest_gone)
    assert {frm for frm, _ in from_newest.values()} == {7}
    assert len(from_newest) == sum(1 for s in eight.values() if s == 7)
    from_middle = moved(eight, middle_gone)
    # Unbinding shard 2 renumbers every later bucket: far more than its own share moves.
    assert len(from_middle) > 3 * len(from_newest)


async def test_grow_then_shrink_live_with_a_worker_draining(
    vhost: Vhost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, topology_file: Any
) -> None:
    data = topologies.fast_data()
    data["downstreams"] = {"inventory": data["downstreams"]["inventory"]}
    assert _cli(vhost, monkeypatch, "--file", str(topology_file(data)), "apply") == 0
    data["downstreams"]["inventory"]["shards"] = 6
    grown = topology_file(data, "grown.yaml")
    assert _cli(vhost, monkeypatch, "--file", str(grown), "plan") == 3
    assert _cli(vhost, monkeypatch, "--file", str(grown), "apply") == 0
    assert _cli(vhost, monkeypatch, "--file", str(grown), "plan") == 0
    spec = topologies.spec_of(data)
    orders = [order_events(f"ord-{i:03d}") for i in range(300)]
    await publish_events(vhost.amqp_url, [e for o in orders for e in o])
    held = [await depth(vhost.amqp_url, names.shard("inventory", i)) for i in (4, 5)]
    assert all(held), "the new shards take their share of the orders"
    async with running_workers(vhost.amqp_url, spec, tmp_path, ["inventory"]) as workers:
        data["downstreams"]["inventory"]["shards"] = 4
        shrunk = topology_file(data, "shrunk.yaml")
        code = await asyncio.to_thread(
            _cli, vhost, monkeypatch, "--file", str(shrunk), "apply", "--drain-timeout", "60"
        )
        assert code == 0
        queues = {q["name"] for q in vhost.client.list_objects("queues", vhost.name)}
        assert not {"inventory.4", "inventory.5"} & queues

        async def applied() -> bool:
            return len(await workers.workers[0].store.inbox_rows()) == 900

        await eventually(applied, what="every event applied across the shrink")
        rows = await workers.workers[0].store.inbox_rows()
        assert all(s == [1, 2, 3] for s in by_order(rows).values())
    assert _cli(vhost, monkeypatch, "--file", str(shrunk), "plan") == 0
