"""The lanes over a fake guard and a fake acker, without a broker: one order's deliveries one
after another, orders side by side up to the slots, and a delivery settled only once the
guard is done with it (acked, or handed back when the guard failed)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from events import encode
from tests.support.factories import order_events, received_of
from topology.spec import DownstreamSpec
from workers.metrics import DownstreamMetrics, WorkerMetrics
from workers.session.lanes import Delivery, Lanes

SHARD = "d.0"


@dataclass
class FakeAcker:
    """What the lanes settled, in order: ('ack' | 'back', tag)."""

    settled: list[tuple[str, int]] = field(default_factory=list)

    def complete(self, tag: int) -> None:
        self.settled.append(("ack", tag))

    def hand_back(self, tag: int) -> None:
        self.settled.append(("back", tag))


@dataclass
class FakeGuard:
    """Holds each delivery until the test lets it go; records what ran, and when."""

    log: list[str] = field(default_factory=list)
    gates: dict[int, asyncio.Event] = field(default_factory=dict)
    failing: set[int] = field(default_factory=set)
    running: int = 0
    most: int = 0

    def gate(self, tag: int) -> asyncio.Event:
        return self.gates.setdefault(tag, asyncio.Event())

    async def handle(self, d: Delivery, divert: Any) -> None:
        tag = d.message.delivery_tag
        self.running += 1
        self.most = max(self.most, self.running)
        self.log.append(f"start {d.order_id}:{d.seq}")
        try:
            await self.gate(tag).wait()
            if tag in self.failing:
                raise RuntimeError("the store went away")
        finally:
            self.running -= 1
            self.log.append(f"end {d.order_id}:{d.seq}")

    async def dead_letter_malformed(self, d: Delivery, exc: Exception, divert: Any) -> None:
        self.log.append(f"malformed {d.message.delivery_tag}")


class NoCache:
    def prefetch(self, order_id: str) -> None:
        pass


def make_lanes(guard: FakeGuard, slots: int = 8, ack_first: bool = False) -> Lanes:
    metrics = DownstreamMetrics(
        WorkerMetrics(CollectorRegistry()), "d", DownstreamSpec().retry.tiers
    )
    return Lanes(
        "d",
        guard,  # type: ignore[arg-type]
        divert=None,  # type: ignore[arg-type]
        cache=NoCache(),  # type: ignore[arg-type]
        slots=asyncio.Semaphore(slots),
        metrics=metrics,
        ack_first=ack_first,
    )


def feed(lanes: Lanes, acker: FakeAcker, order_id: str, tags: list[int], seqs: list[int]) -> None:
    events = order_events(order_id)
    for tag, seq in zip(tags, seqs, strict=True):
        lanes.on_message(SHARD, acker, received_of(encode(events[seq - 1]), tag))  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_orders_deliveries_run_one_after_another_in_arrival_order() -> None:
    guard, acker = FakeGuard(), FakeAcker()
    lanes = make_lanes(guard)
    feed(lanes, acker, "o-1", [1, 2, 3], [1, 2, 3])
    await settle()
    assert guard.log == ["start o-1:1"], "a later event of the order ran beside an earlier one"
    for tag in (1, 2, 3):
        guard.gate(tag).set()
        await settle()
    assert guard.log == [
        "start o-1:1",
        "end o-1:1",
        "start o-1:2",
        "end o-1:2",
        "start o-1:3",
        "end o-1:3",
    ]
    assert acker.settled == [("ack", 1), ("ack", 2), ("ack", 3)]
    assert lanes.holding == 0 and not lanes.lanes


async def test_orders_run_side_by_side_up_to_the_slots() -> None:
    guard, acker = FakeGuard(), FakeAcker()
    lanes = make_lanes(guard, slots=2)
    for i in range(4):
        feed(lanes, acker, f"o-{i}", [i + 1], [1])
    await settle()
    assert guard.running == 2 and guard.most == 2
    for tag in range(1, 5):
        guard.gate(tag).set()
    await asyncio.wait_for(lanes.wind_down(5), 5)
    assert sorted(acker.settled) == [("ack", t) for t in range(1, 5)]
    assert guard.most == 2


async def test_a_delivery_is_settled_only_after_the_guard_is_done_with_it() -> None:
    guard, acker = FakeGuard(), FakeAcker()
    lanes = make_lanes(guard)
    feed(lanes, acker, "o-1", [7], [1])
    await settle()
    assert acker.settled == [], "acked before the guard committed it"
    assert lanes.holding == 1
    guard.gate(7).set()
    await settle()
    assert acker.settled == [("ack", 7)]


async def test_a_delivery_the_guard_failed_on_is_handed_back_not_acked() -> None:
    guard, acker = FakeGuard(failing={2}), FakeAcker()
    lanes = make_lanes(guard)
    feed(lanes, acker, "o-1", [1, 2], [1, 2])
    guard.gate(1).set()
    guard.gate(2).set()
    await asyncio.wait_for(lanes.wind_down(5), 5)
    assert acker.settled == [("ack", 1), ("back", 2)]


async def test_a_malformed_delivery_is_dead_lettered_and_acked_without_a_lane() -> None:
    guard, acker = FakeGuard(), FakeAcker()
    lanes = make_lanes(guard)
    created = order_events("o-1")[0]
    bad = received_of(encode(created), 9)
    bad.body = b"{not json"
    lanes.on_message(SHARD, acker, bad)  # type: ignore[arg-type]
    await settle()
    assert guard.log == ["malformed 9"]
    assert acker.settled == [("ack", 9)]
    assert not lanes.lanes


async def test_at_most_once_acks_as_the_delivery_arrives() -> None:
    guard, acker = FakeGuard(), FakeAcker()
    lanes = make_lanes(guard, ack_first=True)
    feed(lanes, acker, "o-1", [1], [1])
    assert acker.settled == [("ack", 1)]
    guard.gate(1).set()
    await settle()
    assert acker.settled == [("ack", 1)], "settled twice"


async def test_draining_a_shard_waits_for_what_it_holds() -> None:
    guard, acker = FakeGuard(), FakeAcker()
    lanes = make_lanes(guard)
    feed(lanes, acker, "o-1", [1], [1])
    draining = asyncio.create_task(lanes.drain(SHARD, 5))
    await settle()
    assert not draining.done()
    guard.gate(1).set()
    assert await asyncio.wait_for(draining, 5) is True
    assert acker.settled == [("ack", 1)]


async def test_draining_gives_up_after_its_time() -> None:
    guard, acker = FakeGuard(), FakeAcker()
    lanes = make_lanes(guard)
    feed(lanes, acker, "o-1", [1], [1])
    assert await lanes.drain(SHARD, 0.05) is False
    guard.gate(1).set()
    await settle()


@pytest.mark.parametrize("redelivered", [False, True])
async def test_every_delivery_is_counted(redelivered: bool) -> None:
    guard, acker = FakeGuard(), FakeAcker()
    lanes = make_lanes(guard)
    created = order_events("o-1")[0]
    lanes.on_message(SHARD, acker, received_of(encode(created), 1, redelivered))  # type: ignore[arg-type]
    assert lanes.metrics.consumed.value == 1
    assert lanes.metrics.redelivered.value == (1 if redelivered else 0)
    guard.gate(1).set()
    await settle()
