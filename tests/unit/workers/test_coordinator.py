"""Coordinators of one downstream on a shared SQLite store, without a broker: shares spread
evenly, a newcomer waits to settle, and a lease taken by another is reported lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from topology.spec import DownstreamSpec
from workers.api import Handler
from workers.ownership import coordinator as coordinator_module
from workers.ownership.coordinator import Coordinator
from workers.store.database import DownstreamStore

SHARDS = range(4)


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[list[DownstreamStore]]:
    metadata = Handler(DownstreamSpec()).metadata
    opened = [await DownstreamStore.open("d", metadata, None, tmp_path) for _ in range(2)]
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


async def _held_after_round(c: Coordinator, held: set[int]) -> set[int]:
    """One round as the session runs it: stop what was lost or released, take what it may."""
    outcome = await c.round(SHARDS, held)
    held -= outcome.lost | set(outcome.moves.release)
    for shard in outcome.moves.release:
        await c.release(shard)
    for shard in outcome.moves.acquire:
        if await c.acquire(shard):
            held.add(shard)
    return held


async def test_the_first_process_takes_every_shard_and_a_second_gets_half(
    stores: list[DownstreamStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coordinator_module, "SETTLE_SECONDS", 0.0)
    a, b = Coordinator(stores[0], "worker:d"), Coordinator(stores[1], "worker:d")
    held_a = await _held_after_round(a, set())
    assert held_a == set(SHARDS)
    held_b = await _held_after_round(b, set())
    assert held_b == set(), "a newcomer took a shard someone holds"
    held_a = await _held_after_round(a, held_a)  # A sees B: gives its highest shards up
    assert held_a == {0, 1}
    held_b = await _held_after_round(b, held_b)
    assert held_b == {2, 3}
    assert not held_a & held_b


async def test_a_newcomer_takes_nothing_until_it_has_settled(
    stores: list[DownstreamStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coordinator_module, "SETTLE_SECONDS", 0.3)
    a, b = Coordinator(stores[0], "worker:d"), Coordinator(stores[1], "worker:d")
    held_a = await _held_after_round(a, set())
    await asyncio.sleep(0.35)  # A has settled
    held_b = await _held_after_round(b, set())
    held_a = await _held_after_round(a, held_a)
    # B has been up for less than SETTLE_SECONDS: A keeps everything, B waits.
    assert held_a == set(SHARDS) and held_b == set()
    await asyncio.sleep(0.35)  # now B has settled too
    held_a = await _held_after_round(a, held_a)
    held_b = await _held_after_round(b, held_b)
    assert (held_a, held_b) == ({0, 1}, {2, 3})


async def test_a_lease_another_process_took_is_reported_lost(
    stores: list[DownstreamStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coordinator_module, "SETTLE_SECONDS", 0.0)
    a, b = Coordinator(stores[0], "worker:d"), Coordinator(stores[1], "worker:d")
    held_a = await _held_after_round(a, set())
    # A was paused past its lease: it ran out, and B took shard 0.
    with stores[1].transaction() as tx:
        tx.execute("UPDATE shard_leases SET expires_at_ms = 0 WHERE shard = 0")
    assert await b.acquire(0)
    outcome = await a.round(SHARDS, held_a)
    assert outcome.lost == frozenset({0}), "a process that lost its lease was not told"


async def test_leaving_frees_every_lease_at_once(
    stores: list[DownstreamStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coordinator_module, "SETTLE_SECONDS", 0.0)
    a, b = Coordinator(stores[0], "worker:d"), Coordinator(stores[1], "worker:d")
    held_a = await _held_after_round(a, set())
    await a.leave(held_a)
    assert await _held_after_round(b, set()) == set(SHARDS)
