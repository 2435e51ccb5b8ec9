"""Which shards of a downstream each of its processes should hold: pure, the same everywhere.

Every process of a downstream reads the same members (processes that heartbeat in the
downstream's store) and the same leases, and works out its own share. Shares are as even as
the counts allow: with S shards and n settled members, the first S mod n members in name
order hold one more. A process keeps the shards it holds up to its share (no needless
moves), gives up the rest (highest index first), and takes free ones (lowest first) until it
has its share. Leases in the store decide who really holds a shard; this only says what to
aim for, so members that briefly disagree cost a round, never a second owner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Member:
    """A process of the downstream, as its heartbeat row says."""

    name: str
    joined_at: float  # when it first heartbeat (its current run)
    seen_at: float  # its last heartbeat


@dataclass(frozen=True)
class Moves:
    """What one process should do this round."""

    release: tuple[int, ...]  # shards to give up (wind down first, then free the lease)
    acquire: tuple[int, ...]  # free shards to try to take


def settled(members: Iterable[Member], now: float, ttl: float, settle: float) -> list[str]:
    """Live members (heartbeat within `ttl`) that have been up at least `settle` seconds.

    A process that keeps joining and leaving (flapping) never settles, so it never takes a
    share and makes no one move.
    """
    return sorted(m.name for m in members if now - m.seen_at <= ttl and now - m.joined_at >= settle)


def share(shards: int, members: Sequence[str], me: str) -> int:
    """How many shards `me` should hold (0 when it is not a settled member)."""
    if me not in members or not members:
        return 0
    base, extra = divmod(shards, len(members))
    return base + (1 if members.index(me) < extra else 0)


def moves(
    me: str,
    shards: Sequence[int],
    members: Sequence[str],
    owners: Mapping[int, str | None],
) -> Moves:
    """My releases and acquisitions this round.

    `owners` maps each shard to the member holding a live lease on it (None: free). A
    process that is not a settled member takes nothing and gives up what it holds: one
    starting up holds nothing until it has settled, and one whose own heartbeat went stale
    (it was paused) hands back what the others are about to take over anyway.
    """
    mine = sorted(s for s in shards if owners.get(s) == me)
    if me not in members:
        return Moves(release=(), acquire=()) if not mine else Moves(tuple(reversed(mine)), ())
    want = share(len(shards), members, me)
    if len(mine) > want:
        return Moves(release=tuple(sorted(mine, reverse=True)[: len(mine) - want]), acquire=())
    free = [s for s in shards if owners.get(s) is None]
    return Moves(release=(), acquire=tuple(free[: want - len(mine)]))
