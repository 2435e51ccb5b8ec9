"""Shard leases in a downstream's store: which process may consume which shard, and since when.

The processes of one downstream share its store (PostgreSQL across machines, or one SQLite
file on one machine). Each heartbeats a member row and renews the leases it holds; a lease
is taken with one conditional update (free, expired, or already ours), so two processes
never both hold one. Time is the database's, so machines' clocks need not agree. Every
lease taken and given up is logged (`shard_lease_log`) for operators and tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.ownership.assignment import Member
from workers.store.tx import Tx

_NOW_MS = {
    "sqlite": "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    "postgresql": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
}


@dataclass(frozen=True)
class View:
    """What a heartbeat read back: the database's time, the members, who holds what."""

    now_ms: int
    members: list[Member]
    owners: dict[int, str | None]  # live leases only (an expired one reads as free)


class Leases:
    """One process's side of the lease table (each call runs in the caller's transaction)."""

    def __init__(self, member: str, dialect: str, ttl_ms: int) -> None:
        self.member = member
        self.ttl_ms = ttl_ms
        self.now = _NOW_MS[dialect]

    def heartbeat(self, tx: Tx) -> View:
        """Say we are alive, renew what we hold, and read the members and the leases."""
        now = int(tx.fetchall(f"SELECT {self.now}")[0][0])
        tx.execute(
            "INSERT INTO shard_members (member, joined_at_ms, seen_at_ms) VALUES (?, ?, ?) "
            "ON CONFLICT (member) DO UPDATE SET seen_at_ms = excluded.seen_at_ms",
            (self.member, now, now),
        )
        tx.execute(
            "UPDATE shard_leases SET expires_at_ms = ? WHERE owner = ?",
            (now + self.ttl_ms, self.member),
        )
        members = [
            Member(name, joined / 1000, seen / 1000)
            for name, joined, seen in tx.fetchall(
                "SELECT member, joined_at_ms, seen_at_ms FROM shard_members"
            )
        ]
        owners = {
            int(shard): (owner if owner is not None and expires >= now else None)
            for shard, owner, expires in tx.fetchall(
                "SELECT shard, owner, expires_at_ms FROM shard_leases"
            )
        }
        return View(now, members, owners)

    def acquire(self, tx: Tx, shard: int) -> bool:
        """Take a shard that is free, expired or already ours; True when it is ours now."""
        tx.execute(
            "INSERT INTO shard_leases (shard, owner, epoch, expires_at_ms) VALUES (?, NULL, 0, 0) "
            "ON CONFLICT (shard) DO NOTHING",
            (shard,),
        )
        taken = tx.execute(
            f"UPDATE shard_leases SET owner = ?, epoch = epoch + 1, expires_at_ms = {self.now} + ? "
            f"WHERE shard = ? AND (owner IS NULL OR owner = ? OR expires_at_ms < {self.now})",
            (self.member, self.ttl_ms, shard, self.member),
        )
        if taken != 1:
            return False
        tx.execute(
            f"INSERT INTO shard_lease_log (shard, epoch, owner, acquired_at_ms) "
            f"SELECT shard, epoch, owner, {self.now} FROM shard_leases WHERE shard = ?",
            (shard,),
        )
        return True

    def release(self, tx: Tx, shard: int) -> None:
        """Give a shard up (after its consumer is wound down)."""
        tx.execute(
            f"UPDATE shard_lease_log SET released_at_ms = {self.now} WHERE shard = ? AND epoch = "
            "(SELECT epoch FROM shard_leases WHERE shard = ? AND owner = ?)",
            (shard, shard, self.member),
        )
        tx.execute(
            "UPDATE shard_leases SET owner = NULL WHERE shard = ? AND owner = ?",
            (shard, self.member),
        )

    def leave(self, tx: Tx, shards: list[int]) -> None:
        """Give everything up and stop being a member (a clean stop)."""
        for shard in shards:
            self.release(tx, shard)
        tx.execute("DELETE FROM shard_members WHERE member = ?", (self.member,))

    def forget_dead(self, tx: Tx, older_than_ms: int) -> None:
        """Drop member rows of processes silent for longer than `older_than_ms`."""
        tx.execute(f"DELETE FROM shard_members WHERE seen_at_ms < {self.now} - ?", (older_than_ms,))
