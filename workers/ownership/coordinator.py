"""This process's share of its downstream's shards, kept through leases in the shared store."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from workers.ownership.assignment import Moves, moves, settled
from workers.ownership.leases import Leases, View
from workers.store.database import DownstreamStore

LEASE_TTL = 6.0  # a dead process's shards are taken over after this long
ROUND_SECONDS = 1.0  # heartbeat, renewal and rebalancing
SETTLE_SECONDS = 2.0  # a newcomer takes a share once it has been up this long
FORGET_SECONDS = 3600.0  # member rows of processes silent this long are dropped


@dataclass(frozen=True)
class Round:
    """One round's outcome: leases lost (another took them), and what to do next."""

    lost: frozenset[int]
    moves: Moves
    members: tuple[str, ...]


class Coordinator:
    """Heartbeats this process and tells it which shards to start and stop consuming."""

    def __init__(self, store: DownstreamStore, role: str) -> None:
        self.store = store
        self.member = f"{role}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.leases = Leases(self.member, store.dialect, int(LEASE_TTL * 1000))

    async def round(self, shards: Iterable[int], held: set[int]) -> Round:
        """Heartbeat and renew; which held shards were lost, what to release and acquire."""
        view = await self.store.run(self._heartbeat)
        shards = sorted(shards)
        owners = {s: view.owners.get(s) for s in shards}
        lost = frozenset(s for s in held if owners.get(s) != self.member)
        live = settled(view.members, view.now_ms / 1000, LEASE_TTL, SETTLE_SECONDS)
        if not live:  # no one settled yet (a fresh start): no one to wait for
            live = sorted(_alive(view))
        return Round(lost, moves(self.member, shards, live, owners), tuple(live))

    def _heartbeat(self) -> View:
        with self.store.transaction() as tx:
            view = self.leases.heartbeat(tx)
            self.leases.forget_dead(tx, int(FORGET_SECONDS * 1000))
            return view

    async def acquire(self, shard: int) -> bool:
        """Take a free shard's lease; False when another process was faster."""

        def take() -> bool:
            with self.store.transaction() as tx:
                return self.leases.acquire(tx, shard)

        return await self.store.run(take)

    async def release(self, shard: int) -> None:
        """Give a shard's lease up (its consumer is wound down)."""

        def give() -> None:
            with self.store.transaction() as tx:
                self.leases.release(tx, shard)

        await self.store.run(give)

    async def leave(self, held: Iterable[int]) -> None:
        """Give every lease up and stop being a member (a clean stop)."""
        shards = sorted(held)

        def go() -> None:
            with self.store.transaction() as tx:
                self.leases.leave(tx, shards)

        await self.store.run(go)


def _alive(view: View) -> set[str]:
    """Members whose heartbeat is within the lease TTL."""
    now = view.now_ms / 1000
    return {m.name for m in view.members if now - m.seen_at <= LEASE_TTL}
