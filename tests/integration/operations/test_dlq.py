"""DLQ tools against a real broker and a running worker: list, show, redrive in order, purge."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from events import AnyEvent
from operations.cli import main
from tests.support.amqp import depth, publish_events
from tests.support.factories import order_events
from tests.support.fixtures import BROKERS, Vhost
from tests.support.polling import eventually
from tests.support.workers import (
    applied_in_order,
    by_order,
    dead_lettered_at_most,
    running_workers,
    workers_in_order,
)
from topology import names
from topology.spec import TopologySpec
from workers.api import NonRetryableError
from workers.process.app import Workers

# On the suite's broker, and on the version compose pins where a Docker engine answers.
pytestmark = [pytest.mark.integration, pytest.mark.parametrize("vhost", BROKERS, indirect=True)]
D = "inventory"
DLQ = names.dlq(D)


@dataclass
class Parked:
    """Three orders parked behind their failed created event (9 dead letters), ten applied."""

    vhost: Vhost
    workers: Workers
    broken: set[str]  # whose created event fails until "the fix ships"
    orders: dict[str, list[AnyEvent]]
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    async def cli(self, *args: str) -> int:
        """`python -m topology ...` against this vhost; the output stays in capsys."""
        self.vhost.env(self.monkeypatch)
        self.capsys.readouterr()
        return await asyncio.to_thread(main, list(args))

    async def listed(self, *args: str) -> list[dict[str, Any]]:
        """`dlq list --json` rows."""
        assert await self.cli("dlq", "list", D, "--json", *args) == 0
        rows: list[dict[str, Any]] = json.loads(self.capsys.readouterr().out)
        return rows

    async def applied(self, order_id: str) -> list[int]:
        """The seqs of an order applied by the worker, in order."""
        return by_order(await self.workers.workers[0].store.inbox_rows()).get(order_id, [])


@pytest.fixture
async def parked(
    vhost: Vhost,
    fast_spec: TopologySpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> AsyncIterator[Parked]:
    vhost.apply(fast_spec)
    broken = {"ord-x", "ord-y", "ord-z"}

    def faults(event: AnyEvent, attempts: int) -> None:
        if event.order_id in broken and event.seq == 1:
            raise NonRetryableError(f"{event.order_id}: price list missing")

    orders = {o: order_events(o) for o in sorted(broken)}
    good = [order_events(f"ord-{i:02d}") for i in range(10)]
    async with running_workers(vhost.amqp_url, fast_spec, tmp_path, [D], faults) as workers:
        await publish_events(vhost.amqp_url, [e for o in [*orders.values(), *good] for e in o])

        async def nine() -> bool:
            return await depth(vhost.amqp_url, DLQ) == 9

        # Only the broken orders' events are dead-lettered, and the others apply in order.
        holding = [workers_in_order(workers), dead_lettered_at_most(workers, 9)]
        await eventually(nine, what="9 dead letters", always=holding)
        yield Parked(vhost, workers, broken, orders, monkeypatch, capsys)


async def test_list_shows_every_dead_letter_and_keeps_them(parked: Parked) -> None:
    first = await parked.listed()
    assert await parked.listed() == first and len(first) == 9
    assert await depth(parked.vhost.amqp_url, DLQ) == 9
    reasons = sorted((r["order_id"], r["seq"], r["reason"]) for r in first)
    assert reasons == sorted(
        [(o, 1, "non-retryable") for o in parked.broken]
        + [(o, s, "blocked-by-predecessor") for o in parked.broken for s in (2, 3)]
    )
    assert len(await parked.listed("--reason", "non-retryable")) == 3


async def test_status_counts_parked_orders_from_the_same_dlq(parked: Parked) -> None:
    assert await parked.cli("status", "--json") == 0
    out = json.loads(parked.capsys.readouterr().out)
    rows = {r["downstream"]: r for r in out["downstreams"]}
    assert (rows[D]["dlq"], rows[D]["parked_orders"]) == (9, 3)
    assert await depth(parked.vhost.amqp_url, DLQ) == 9


async def test_show_prints_the_failure_its_stack_and_headers(parked: Parked) -> None:
    created_x = str(parked.orders["ord-x"][0].event_id)
    assert await parked.cli("dlq", "show", D, created_x) == 0
    shown = parked.capsys.readouterr().out
    assert "price list missing" in shown and "Traceback" in shown and "x-failed-queue" in shown


async def test_a_dry_run_moves_nothing(parked: Parked) -> None:
    assert await parked.cli("dlq", "redrive", D, "--order-id", "ord-x", "--dry-run") == 0
    assert "would redrive 3 message(s) of 1 order(s)" in parked.capsys.readouterr().out
    # The command has returned and closed its connection: whatever it moved is gone by now.
    assert await depth(parked.vhost.amqp_url, DLQ) == 9
    assert await parked.applied("ord-x") == []


async def test_redrive_after_the_fix_applies_the_order_in_seq_order(parked: Parked) -> None:
    parked.broken.discard("ord-x")  # the fix ships
    assert await parked.cli("dlq", "redrive", D, "--order-id", "ord-x") == 0
    assert "redrove 3 message(s) of 1 order(s)" in parked.capsys.readouterr().out

    async def whole() -> bool:
        return len(await parked.applied("ord-x")) == 3

    store = parked.workers.workers[0].store
    await eventually(whole, what="ord-x applied after redrive", always=applied_in_order(store))
    assert await parked.applied("ord-x") == [1, 2, 3]
    progress = await parked.workers.workers[0].store.load_progress(["ord-x"])
    assert progress["ord-x"].parked_event_id is None
    assert await depth(parked.vhost.amqp_url, DLQ) == 6
    assert "ord-x" not in {r["order_id"] for r in await parked.listed()}


async def test_purge_needs_yes_and_removes_only_the_chosen_order(parked: Parked) -> None:
    assert await parked.cli("dlq", "purge", D, "--order-id", "ord-y") == 1
    refused = parked.capsys.readouterr()
    assert "refusing to purge without --yes" in refused.err and not refused.out
    assert await depth(parked.vhost.amqp_url, DLQ) == 9
    assert await parked.cli("dlq", "purge", D, "--order-id", "ord-y", "--yes") == 0
    assert await depth(parked.vhost.amqp_url, DLQ) == 6
    assert {r["order_id"] for r in await parked.listed()} == {"ord-x", "ord-z"}


async def test_an_unknown_downstream_is_one_line(parked: Parked) -> None:
    assert await parked.cli("dlq", "list", "nowhere") == 1
    assert "unknown downstream 'nowhere'" in parked.capsys.readouterr().err
