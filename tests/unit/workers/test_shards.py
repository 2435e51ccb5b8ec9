"""Giving a shard up, over a fake channel, lanes and coordinator, without a broker: the
consumer is cancelled, what the shard's lanes hold is finished and acked, the channel is
closed, and only then is the lease given up (never at all for a lease another process took)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from workers.ownership.assignment import Moves
from workers.ownership.coordinator import Round
from workers.session import shards as shards_module
from workers.session.acks import Acker
from workers.session.shards import HeldShards, _Shard

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(autouse=True)
def no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards_module, "SETTLE_GRACE", 0.0)


@dataclass
class Journal:
    """What happened, in order."""

    entries: list[str] = field(default_factory=list)

    def before(self, first: str, then: str) -> bool:
        return self.entries.index(first) < self.entries.index(then)


@dataclass(eq=False)  # hashable, as a session keeps the channels it closes in a set
class FakeChannel:
    journal: Journal
    number: int = 1

    async def cancel(self, tag: str) -> None:
        self.journal.entries.append(f"cancel {tag}")

    def ack(self, tag: int, multiple: bool = False) -> None:
        self.journal.entries.append(f"ack {tag}")

    def nack(self, tag: int, requeue: bool = True) -> None:
        self.journal.entries.append(f"nack {tag}")

    async def qos(self, prefetch: int) -> None:
        self.journal.entries.append(f"qos {self.number}")

    async def close(self) -> None:
        self.journal.entries.append(f"close {self.number}")


@dataclass
class FakeLanes:
    """Holds a shard's deliveries until the test lets them finish."""

    journal: Journal
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    async def drain(self, shard: str, within: float) -> bool:
        self.journal.entries.append(f"drain {shard}")
        await self.finished.wait()
        self.journal.entries.append(f"drained {shard}")
        return True

    async def wind_down(self, within: float) -> None:
        self.journal.entries.append("lanes wound down")


@dataclass
class FakeCoordinator:
    journal: Journal

    async def release(self, shard: int) -> None:
        self.journal.entries.append(f"release {shard}")

    async def leave(self, held: Any) -> None:
        self.journal.entries.append("leave")


def held_shards(journal: Journal, *indexes: int) -> tuple[HeldShards, FakeLanes, dict[int, Acker]]:
    """A session holding these shards of `d`, each on its own fake channel."""
    lanes = FakeLanes(journal)
    held = HeldShards(
        "d",
        connections=None,  # type: ignore[arg-type]
        lanes=lanes,  # type: ignore[arg-type]
        coordinator=FakeCoordinator(journal),  # type: ignore[arg-type]
        cache=None,  # type: ignore[arg-type]
        count=4,
        prefetch=10,
        on_acked=lambda n: None,
    )
    ackers = {}
    for index in indexes:
        channel = FakeChannel(journal, number=index)
        ackers[index] = Acker(channel)
        held.active[index] = _Shard(channel, f"tag-{index}", ackers[index])  # type: ignore[arg-type]
    return held, lanes, ackers


async def _a_moment() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


@pytest.mark.parametrize("release", [True, False], ids=["given-up", "lost"])
async def test_a_shard_is_finished_and_acked_before_its_channel_closes_and_its_lease_goes(
    release: bool,
) -> None:
    journal = Journal()
    held, lanes, ackers = held_shards(journal, 2)
    held.stop(2, release=release)
    await _a_moment()
    # Cancelled, then a round trip that brings in what the broker sent before it read the
    # cancel; and nothing more while the shard's lanes still hold deliveries.
    assert journal.entries == ["cancel tag-2", "qos 2", "drain d.2"], journal.entries
    ackers[2].complete(1)  # the lane holding delivery 1 finishes
    lanes.finished.set()
    await asyncio.wait_for(asyncio.gather(*held.stopping.values()), 5)
    # Acked, a round trip (a quorum queue can drop acks sent just before their channel
    # closes), closed; and only then the lease given up, if it is still ours to give.
    rest = journal.entries[journal.entries.index("drained d.2") :]
    assert rest == ["drained d.2", "ack 1", "qos 2", "close 2", *["release 2"] * release], (
        journal.entries
    )
    assert 2 not in held.active and not held.stopping


async def test_a_graceful_stop_winds_every_shard_down_before_leaving() -> None:
    journal = Journal()
    held, lanes, _ = held_shards(journal, 0, 1)
    closing = asyncio.create_task(held.close())
    await _a_moment()
    assert "leave" not in journal.entries and not any(
        e.startswith("close") for e in journal.entries
    ), f"let go while the lanes held deliveries: {journal.entries}"
    lanes.finished.set()
    await asyncio.wait_for(closing, 5)
    assert journal.entries[-1] == "leave"
    assert journal.before("close 0", "leave") and journal.before("close 1", "leave")


@dataclass
class LosingCoordinator(FakeCoordinator):
    """A lease round in which another process took `taken`."""

    taken: frozenset[int] = frozenset()

    async def round(self, shards: range, held: set[int]) -> Round:
        return Round(self.taken & held, Moves(release=(), acquire=()), ())


async def test_a_shard_whose_lease_another_took_is_stopped_at_once_and_not_released() -> None:
    journal = Journal()
    held, lanes, _ = held_shards(journal, 1, 2)
    held.coordinator = LosingCoordinator(journal, taken=frozenset({2}))  # type: ignore[assignment]
    await held.round()
    await _a_moment()
    assert "cancel tag-2" in journal.entries, (
        f"a process that lost the lease of shard 2 still consumes it: {journal.entries}"
    )
    assert "cancel tag-1" not in journal.entries, journal.entries
    lanes.finished.set()
    await asyncio.wait_for(asyncio.gather(*held.stopping.values()), 5)
    assert "close 2" in journal.entries and 2 not in held.active
    assert "release 2" not in journal.entries, "released a lease another process holds"
