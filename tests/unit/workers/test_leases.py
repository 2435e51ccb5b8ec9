"""Shard leases on SQLite and PostgreSQL, called directly: two processes never hold one shard.

A acquires; B's acquire fails; B succeeds only once A's lease has expired; a renewal by a
process that does not hold the lease extends nothing; a released lease is free at once; and
acquires racing from several connections leave exactly one owner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.producer import postgres_database
from topology.spec import DownstreamSpec
from workers.api import Handler
from workers.ownership.leases import Leases, View
from workers.store.database import DownstreamStore

TTL_MS = 400
Opener = Callable[[], Any]


@pytest.fixture(params=["sqlite", "postgresql"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens connections to one downstream store (each store its own connection)."""
    opened: list[DownstreamStore] = []
    metadata = Handler(DownstreamSpec()).metadata

    async def with_dsn(dsn: str | None) -> AsyncIterator[Opener]:
        async def open_one() -> DownstreamStore:
            store = await DownstreamStore.open("leased", metadata, dsn, tmp_path)
            opened.append(store)
            return store

        yield open_one
        for store in opened:
            await store.close()

    if request.param == "sqlite":
        async for opener in with_dsn(None):
            yield opener
    else:
        async with postgres_database() as dsn:
            async for opener in with_dsn(dsn):
                yield opener


async def _do(store: DownstreamStore, call: Callable[[Any], Any]) -> Any:
    def run() -> Any:
        with store.transaction() as tx:
            return call(tx)

    return await store.run(run)


async def _owner(store: DownstreamStore, shard: int) -> str | None:
    view: View = await _do(store, Leases("reader", store.dialect, TTL_MS).heartbeat)
    return view.owners.get(shard)


async def _expires(store: DownstreamStore, shard: int) -> int:
    rows = await _do(
        store,
        lambda tx: tx.fetchall("SELECT expires_at_ms FROM shard_leases WHERE shard = ?", (shard,)),
    )
    return int(rows[0][0])


async def test_a_held_lease_cannot_be_taken(open_store: Opener) -> None:
    a_store, b_store = await open_store(), await open_store()
    a, b = Leases("a", a_store.dialect, TTL_MS), Leases("b", b_store.dialect, TTL_MS)
    assert await _do(a_store, lambda tx: a.acquire(tx, 0))
    assert not await _do(b_store, lambda tx: b.acquire(tx, 0)), "two processes hold shard 0"
    assert await _owner(b_store, 0) == "a"
    assert await _do(a_store, lambda tx: a.acquire(tx, 0)), "the owner cannot take its own again"


async def test_a_lease_is_taken_over_only_once_it_expired(open_store: Opener) -> None:
    a_store, b_store = await open_store(), await open_store()
    a, b = Leases("a", a_store.dialect, TTL_MS), Leases("b", b_store.dialect, TTL_MS)
    assert await _do(a_store, lambda tx: a.acquire(tx, 3))
    taken_at = time.monotonic()
    while not await _do(b_store, lambda tx: b.acquire(tx, 3)):
        assert time.monotonic() - taken_at < 5, "an expired lease was never taken over"
        await asyncio.sleep(0.05)
    assert time.monotonic() - taken_at >= TTL_MS / 1000 * 0.9, "taken before it expired"
    assert await _owner(a_store, 3) == "b"
    # A renews what it thinks it holds: nothing, it is B's now.
    await _do(a_store, a.heartbeat)
    assert await _owner(a_store, 3) == "b"
    assert not await _do(a_store, lambda tx: a.acquire(tx, 3))


async def test_a_renewal_by_a_process_that_does_not_hold_the_lease_extends_nothing(
    open_store: Opener,
) -> None:
    a_store, b_store = await open_store(), await open_store()
    a, b = Leases("a", a_store.dialect, TTL_MS), Leases("b", b_store.dialect, TTL_MS)
    assert await _do(a_store, lambda tx: a.acquire(tx, 1))
    expires = await _expires(a_store, 1)
    await asyncio.sleep(0.05)
    await _do(b_store, b.heartbeat)
    assert await _expires(b_store, 1) == expires, "a non-owner's heartbeat renewed the lease"
    await _do(a_store, a.heartbeat)
    assert await _expires(a_store, 1) > expires, "the owner's heartbeat did not renew it"


async def test_a_released_lease_is_free_at_once_and_logged(open_store: Opener) -> None:
    a_store, b_store = await open_store(), await open_store()
    a, b = Leases("a", a_store.dialect, TTL_MS), Leases("b", b_store.dialect, TTL_MS)
    assert await _do(a_store, lambda tx: a.acquire(tx, 2))
    await _do(b_store, lambda tx: b.release(tx, 2))  # not b's: changes nothing
    assert await _owner(a_store, 2) == "a"
    await _do(a_store, lambda tx: a.release(tx, 2))
    assert await _do(b_store, lambda tx: b.acquire(tx, 2))
    log = await _do(
        a_store,
        lambda tx: tx.fetchall(
            "SELECT epoch, owner, released_at_ms IS NOT NULL FROM shard_lease_log "
            "WHERE shard = 2 ORDER BY epoch"
        ),
    )
    assert [(int(e), o, bool(r)) for e, o, r in log] == [(1, "a", True), (2, "b", False)]


async def _acquire(store: DownstreamStore, member: str, shard: int) -> bool:
    leases = Leases(member, store.dialect, TTL_MS)
    return bool(await _do(store, lambda tx: leases.acquire(tx, shard)))


async def test_acquires_racing_from_many_connections_leave_one_owner(open_store: Opener) -> None:
    stores = [await open_store() for _ in range(6)]
    for round_ in range(5):
        shard = 10 + round_
        won = await asyncio.gather(
            *(_acquire(s, f"p{i}", shard) for i, s in enumerate(stores)), return_exceptions=True
        )
        winners = [i for i, w in enumerate(won) if w is True]
        assert len(winners) == 1, f"shard {shard}: {won}"
        assert await _owner(stores[0], shard) == f"p{winners[0]}"
