"""DLQ tools against a real broker and a running worker: list, show, redrive in order, purge."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from events import AnyEvent
from tests.factories import order_events
from tests.integration.amqp import message_count
from tests.integration.conftest import Vhost
from tests.integration.worker_fixtures import by_order, publish_events, running_workers, wait_for
from topology import names
from topology.cli import main
from topology.spec import TopologySpec
from workers.errors import NonRetryableError

pytestmark = pytest.mark.integration
D = "inventory"


async def _depth(vhost: Vhost, queue: str) -> int:
    connection = await aio_pika.connect(vhost.amqp_url)
    async with connection:
        return await message_count(await connection.channel(), queue)


async def _cli(vhost: Vhost, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    vhost.env(monkeypatch)
    return await asyncio.to_thread(main, list(args))


async def test_list_show_redrive_purge(
    vhost: Vhost,
    fast_spec: TopologySpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    vhost.apply(fast_spec)
    broken = {"ord-x", "ord-y", "ord-z"}  # their created fails until the "fix" ships

    def faults(event: AnyEvent, attempts: int) -> None:
        if event.order_id in broken and event.seq == 1:
            raise NonRetryableError(f"{event.order_id}: price list missing")

    parked = {o: order_events(o) for o in sorted(broken)}
    good = [order_events(f"ord-{i:02d}") for i in range(10)]
    async with running_workers(vhost.amqp_url, fast_spec, tmp_path, names=[D], faults=faults) as ws:
        worker = ws.workers[0]
        await publish_events(vhost.amqp_url, [e for o in [*parked.values(), *good] for e in o])
        await wait_for(lambda: _at(vhost, names.dlq(D), 9), what="9 dead letters")
        capsys.readouterr()

        # list: twice the same, and the queue keeps every message.
        assert await _cli(vhost, monkeypatch, "dlq", "list", D, "--json") == 0
        first = json.loads(capsys.readouterr().out)
        assert await _cli(vhost, monkeypatch, "dlq", "list", D, "--json") == 0
        second = json.loads(capsys.readouterr().out)
        assert first == second and len(first) == 9
        assert await _depth(vhost, names.dlq(D)) == 9
        reasons = sorted((r["order_id"], r["seq"], r["reason"]) for r in first)
        assert reasons == sorted(
            [(o, 1, "non-retryable") for o in broken]
            + [(o, s, "blocked-by-predecessor") for o in broken for s in (2, 3)]
        )
        assert (
            await _cli(vhost, monkeypatch, "dlq", "list", D, "--reason", "non-retryable", "--json")
            == 0
        )
        assert len(json.loads(capsys.readouterr().out)) == 3

        # status counts the parked orders from the same DLQ, which keeps every message.
        vhost.env(monkeypatch)
        assert await asyncio.to_thread(main, ["status", "--json"]) == 0
        rows = {r["downstream"]: r for r in json.loads(capsys.readouterr().out)["downstreams"]}
        assert (rows[D]["dlq"], rows[D]["parked_orders"]) == (9, 3)
        assert await _depth(vhost, names.dlq(D)) == 9

        # show: everything about one, the stack included.
        created_x = str(parked["ord-x"][0].event_id)
        assert await _cli(vhost, monkeypatch, "dlq", "show", D, created_x) == 0
        shown = capsys.readouterr().out
        assert "price list missing" in shown and "Traceback" in shown and "x-failed-queue" in shown

        # dry run: nothing moves.
        assert (
            await _cli(vhost, monkeypatch, "dlq", "redrive", D, "--order-id", "ord-x", "--dry-run")
            == 0
        )
        assert "would redrive 3 message(s) of 1 order(s)" in capsys.readouterr().out
        await asyncio.sleep(0.5)
        assert await _depth(vhost, names.dlq(D)) == 9
        assert "ord-x" not in by_order(await worker.store.inbox_rows())

        # the fix ships for ord-x; redrive it: applied in seq order, its entries gone.
        broken.discard("ord-x")
        assert await _cli(vhost, monkeypatch, "dlq", "redrive", D, "--order-id", "ord-x") == 0
        assert "redrove 3 message(s) of 1 order(s)" in capsys.readouterr().out
        await wait_for(lambda: _applied(worker, "ord-x"), what="ord-x applied after redrive")
        assert by_order(await worker.store.inbox_rows())["ord-x"] == [1, 2, 3]
        progress = await worker.store.load_progress(["ord-x"])
        assert progress["ord-x"].parked_event_id is None
        assert await _depth(vhost, names.dlq(D)) == 6
        assert await _cli(vhost, monkeypatch, "dlq", "list", D, "--json") == 0
        assert "ord-x" not in {r["order_id"] for r in json.loads(capsys.readouterr().out)}

        # purge: refused without --yes; with it, only the chosen order goes.
        assert await _cli(vhost, monkeypatch, "dlq", "purge", D, "--order-id", "ord-y") == 1
        assert await _depth(vhost, names.dlq(D)) == 6
        assert (
            await _cli(vhost, monkeypatch, "dlq", "purge", D, "--order-id", "ord-y", "--yes") == 0
        )
        assert await _depth(vhost, names.dlq(D)) == 3

        assert await _cli(vhost, monkeypatch, "dlq", "list", "nowhere") == 1
        assert "unknown downstream 'nowhere'" in capsys.readouterr().err


async def _at(vhost: Vhost, queue: str, n: int) -> bool:
    return await _depth(vhost, queue) == n


async def _applied(worker: Any, order_id: str) -> bool:
    return len(by_order(await worker.store.inbox_rows()).get(order_id, [])) == 3
