"""The ordering guard on a real SQLite store, without a broker: what each delivery becomes.

Each promise fails here in seconds, with its name: the next event applied once, a gap
deferred (never applied), a duplicate skipped before `check`, a parked order's later events
dead-lettered behind it, failures retried or parked, a redriven event unparking its order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from broker.received import Received
from events import AnyEvent, MalformedEvent, MalformedReason, encode
from events import headers as h
from events.evolution import UnsupportedVersion
from events.headers import DeadReason
from tests.support.factories import order_events, received_of
from topology.spec import DownstreamSpec
from workers.api import Handler, NonRetryableError, TransientError
from workers.applying.guard import OrderingGuard, Waited
from workers.applying.policy import DeadLetter, Retry, now_ms, wait_bound_ms
from workers.applying.progress import ProgressCache
from workers.metrics import DownstreamMetrics, WorkerMetrics
from workers.store.database import DownstreamStore, Progress

SPEC = DownstreamSpec()
SHARD = "d.0"


class Counting(Handler):
    """Counts `check` calls per event, and fails the events it is told to."""

    name = "counting"

    def __init__(self, spec: DownstreamSpec) -> None:
        super().__init__(spec)
        self.checks: Counter[str] = Counter()
        self.failing: dict[str, Exception] = {}

    async def check(self, event: AnyEvent, attempts: int) -> None:
        self.checks[str(event.event_id)] += 1
        if (error := self.failing.get(str(event.event_id))) is not None:
            raise error


@dataclass
class Moved:
    """A fake divert: the copies the guard republished, confirmed at once."""

    moves: list[tuple[str | None, Retry | DeadLetter]] = field(default_factory=list)

    async def move(
        self, message: Received, decision: Retry | DeadLetter, context: dict[str, Any]
    ) -> None:
        self.moves.append((message.message_id, decision))


@dataclass
class Delivery:
    """A decoded delivery as the guard reads it."""

    message: Received
    shard: str = SHARD
    event: AnyEvent | None = None
    unsupported: UnsupportedVersion | None = None

    @property
    def event_id(self) -> str:
        return str(self.message.message_id)

    @property
    def order_id(self) -> str:
        source = self.event or self.unsupported
        assert source is not None
        return source.order_id

    @property
    def seq(self) -> int:
        source = self.event or self.unsupported
        assert source is not None
        return source.seq


def deliver(event: AnyEvent, **headers: Any) -> Delivery:
    return Delivery(received_of(encode(event), **headers), event=event)


@dataclass
class Guarded:
    guard: OrderingGuard
    store: DownstreamStore
    handler: Counting
    moved: Moved
    metrics: DownstreamMetrics

    async def handle(self, *deliveries: Delivery) -> None:
        for d in deliveries:
            await self.guard.handle(d, self.moved)

    async def applied(self) -> list[tuple[str, int]]:
        return [(r.order_id, r.seq) for r in await self.store.inbox_rows()]

    async def progress(self, order_id: str) -> tuple[int, str | None]:
        found = (await self.store.load_progress([order_id])).get(order_id)
        return (found.last_seq, found.parked_event_id) if found else (0, None)

    def reasons(self) -> list[str]:
        return [
            d.reason.value if isinstance(d, DeadLetter) else f"retry:{d.tier}"
            for _, d in self.moved.moves
        ]


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Guarded]:
    handler = Counting(SPEC)
    store = await DownstreamStore.open("d", handler.metadata, None, tmp_path)
    metrics = DownstreamMetrics(WorkerMetrics(CollectorRegistry()), "d", SPEC.retry.tiers)
    cache = ProgressCache(store)
    guard = OrderingGuard.for_downstream("d", SPEC, store, handler, cache, metrics)
    try:
        yield Guarded(guard, store, handler, Moved(), metrics)
    finally:
        await guard.close()
        await store.close()


async def test_the_orders_next_events_are_applied_in_order_once(guarded: Guarded) -> None:
    events = order_events("o-1")
    await guarded.handle(*(deliver(e) for e in events))
    assert await guarded.applied() == [("o-1", 1), ("o-1", 2), ("o-1", 3)]
    assert await guarded.progress("o-1") == (3, None)
    assert not guarded.moved.moves
    assert guarded.metrics.applied.value == 3


async def test_a_gap_waits_in_the_store_and_applies_the_moment_its_predecessor_does(
    guarded: Guarded,
) -> None:
    created, paid, shipped = order_events("o-gap")
    await guarded.handle(deliver(shipped), deliver(paid))
    assert await guarded.applied() == [], "an event was applied before its predecessor"
    assert not guarded.moved.moves, "a deferral went through a retry tier"
    assert [(r.order_id, r.seq) for r in await guarded.store.waiting_rows()] == [
        ("o-gap", 2),
        ("o-gap", 3),
    ]
    assert guarded.metrics.deferred.value == 2
    assert guarded.handler.checks[str(paid.event_id)] == 0
    # Its predecessor comes: all three apply in order, at once, and the rows are gone.
    await guarded.handle(deliver(created))
    assert await guarded.applied() == [("o-gap", 1), ("o-gap", 2), ("o-gap", 3)]
    assert await guarded.store.waiting_rows() == []
    # A copy of a held event arriving again later is a duplicate.
    await guarded.handle(deliver(paid))
    assert guarded.metrics.duplicates.value == 1
    assert guarded.handler.checks[str(paid.event_id)] == 1


async def test_a_held_event_whose_predecessor_another_process_applied_is_swept_in(
    guarded: Guarded, tmp_path: Path
) -> None:
    created, paid, _ = order_events("o-swept")
    await guarded.handle(deliver(paid))
    # Another process applies seq 1 (and the in-memory hold of this one is gone: a restart).
    with guarded.store.transaction() as tx:
        row = (str(created.event_id), "o-swept", 1, created.event_type.value)
        guarded.store.record_applied(tx, [row], {"o-swept": Progress(1)})
    guarded.guard.held.clear()
    guarded.guard.held_count = 0
    now = now_ms()
    [due] = await guarded.store.due_waiting(now, [SHARD], now - 60_000)
    await guarded.guard.handle(Waited.of(due), guarded.moved)
    assert await guarded.applied() == [("o-swept", 1), ("o-swept", 2)]
    assert await guarded.store.waiting_rows() == []
    # Handled again (two processes racing on a stale row): applied once.
    await guarded.guard.handle(Waited.of(due), guarded.moved)
    assert await guarded.applied() == [("o-swept", 1), ("o-swept", 2)]


async def test_a_held_event_past_its_bound_is_dead_lettered_and_parks_its_order(
    guarded: Guarded,
) -> None:
    _, paid, shipped = order_events("o-late")
    await guarded.handle(deliver(paid), deliver(shipped))
    now = now_ms()
    assert await guarded.store.due_waiting(now, [SHARD], 0) == [], "due before its bound"
    later = now + wait_bound_ms(SPEC.retry) + 1
    rows = await guarded.store.due_waiting(later, [SHARD], 0)
    assert [r.seq for r in rows] == [2, 3]
    for row in rows:
        expired = Waited.of(row)
        expired.expires_at_ms = 0  # as the sweeper meets it past its bound
        await guarded.guard.handle(expired, guarded.moved)
    assert guarded.reasons() == ["predecessor-missing", "blocked-by-predecessor"]
    assert await guarded.progress("o-late") == (0, str(paid.event_id))
    assert await guarded.store.waiting_rows() == []
    assert await guarded.applied() == []


async def test_held_events_behind_an_order_that_parks_follow_it_to_the_dlq(
    guarded: Guarded,
) -> None:
    created, paid, shipped = order_events("o-held-park")
    guarded.handler.failing[str(paid.event_id)] = NonRetryableError("card declined for good")
    await guarded.handle(deliver(shipped), deliver(created), deliver(paid))
    assert guarded.reasons() == ["non-retryable", "blocked-by-predecessor"]
    assert await guarded.store.waiting_rows() == []
    assert await guarded.applied() == [("o-held-park", 1)]


async def test_a_held_event_that_fails_transiently_goes_to_a_tier_and_leaves_the_store(
    guarded: Guarded,
) -> None:
    created, paid, _ = order_events("o-held-flaky")
    guarded.handler.failing[str(paid.event_id)] = TransientError("db down")
    await guarded.handle(deliver(paid), deliver(created))
    assert guarded.reasons() == ["retry:short"]
    [(_, retry)] = guarded.moved.moves
    assert isinstance(retry, Retry) and retry.headers[h.RETRY_AT] > now_ms()
    assert await guarded.store.waiting_rows() == []
    assert await guarded.applied() == [("o-held-flaky", 1)]


async def test_duplicates_are_skipped_before_check(guarded: Guarded) -> None:
    created, paid, _ = order_events("o-dup")
    await guarded.handle(deliver(created), deliver(paid))
    for _ in range(3):
        await guarded.handle(deliver(created), deliver(paid))
    assert guarded.handler.checks == {str(created.event_id): 1, str(paid.event_id): 1}
    assert guarded.metrics.duplicates.value == 6
    assert await guarded.applied() == [("o-dup", 1), ("o-dup", 2)]


async def test_an_event_another_process_applied_is_read_from_the_store_not_deferred(
    guarded: Guarded,
) -> None:
    created, paid, _ = order_events("o-moved")
    assert (await guarded.guard.cache.get("o-moved")).last_seq == 0  # cached before
    # Another process (the shard's previous owner) applies seq 1 in the shared store.
    with guarded.store.transaction() as tx:
        row = (str(created.event_id), "o-moved", 1, created.event_type.value)
        guarded.store.record_applied(tx, [row], {"o-moved": Progress(1)})
    await guarded.handle(deliver(paid))
    assert not guarded.moved.moves, "a stale cache deferred an event whose predecessor is in"
    assert await guarded.applied() == [("o-moved", 1), ("o-moved", 2)]


async def test_a_permanent_failure_parks_the_order_and_its_successors_follow_it_to_the_dlq(
    guarded: Guarded,
) -> None:
    created, paid, shipped = order_events("o-park")
    guarded.handler.failing[str(paid.event_id)] = NonRetryableError("card declined for good")
    await guarded.handle(deliver(created), deliver(paid), deliver(shipped))
    assert guarded.reasons() == ["non-retryable", "blocked-by-predecessor"]
    assert await guarded.progress("o-park") == (1, str(paid.event_id))
    assert await guarded.applied() == [("o-park", 1)], "a parked order's event was applied"
    assert guarded.handler.checks[str(shipped.event_id)] == 0
    dead = guarded.moved.moves[0][1]
    assert dead.headers[h.DEAD_REASON] == "non-retryable"
    assert dead.headers[h.ERROR_MESSAGE] == "card declined for good"


async def test_a_redriven_parked_event_applies_unparks_and_lets_its_successors_in(
    guarded: Guarded,
) -> None:
    created, paid, shipped = order_events("o-redrive")
    guarded.handler.failing[str(paid.event_id)] = NonRetryableError("bug")
    await guarded.handle(deliver(created), deliver(paid))
    del guarded.handler.failing[str(paid.event_id)]  # the fix is deployed
    await guarded.handle(deliver(paid, **{h.REDRIVEN_COUNT: 1}), deliver(shipped))
    assert await guarded.applied() == [("o-redrive", 1), ("o-redrive", 2), ("o-redrive", 3)]
    assert await guarded.progress("o-redrive") == (3, None)


async def test_a_transient_failure_is_retried_through_the_tiers_with_its_attempts(
    guarded: Guarded,
) -> None:
    created, _, _ = order_events("o-flaky")
    guarded.handler.failing[str(created.event_id)] = TransientError("db down")
    tiers = list(SPEC.retry.tiers)
    for attempt in range(SPEC.retry.max_attempts - 1):
        await guarded.handle(deliver(created, **{h.ATTEMPTS: attempt}))
    decisions = [d for _, d in guarded.moved.moves]
    assert all(isinstance(d, Retry) for d in decisions)
    assert [d.headers[h.ATTEMPTS] for d in decisions] == list(range(1, SPEC.retry.max_attempts))
    assert [d.tier for d in decisions if isinstance(d, Retry)][: len(tiers)] == tiers
    # The last attempt fails too: dead-lettered, and the order parked.
    await guarded.handle(deliver(created, **{h.ATTEMPTS: SPEC.retry.max_attempts - 1}))
    assert guarded.reasons()[-1] == "retries-exhausted"
    assert await guarded.progress("o-flaky") == (0, str(created.event_id))
    assert await guarded.applied() == []


async def test_a_predecessor_that_never_comes_parks_the_order_after_max_deferrals(
    guarded: Guarded,
) -> None:
    _, paid, _ = order_events("o-lost")
    # A copy deferred through the tier by an older worker that has used up its waits.
    await guarded.handle(deliver(paid, **{h.DEFERRALS: SPEC.retry.max_deferrals}))
    assert guarded.reasons() == ["predecessor-missing"]
    assert await guarded.progress("o-lost") == (0, str(paid.event_id))


async def test_a_newer_version_parks_its_order_when_it_is_next(guarded: Guarded) -> None:
    created, paid, _ = order_events("o-v99")
    await guarded.handle(deliver(created))
    newer = Delivery(
        received_of(encode(paid)), unsupported=UnsupportedVersion(99, "o-v99", paid.seq)
    )
    await guarded.handle(newer)
    assert guarded.reasons() == ["unsupported-version"]
    assert await guarded.progress("o-v99") == (1, str(paid.event_id))


async def test_a_malformed_message_is_dead_lettered_without_parking_anything(
    guarded: Guarded,
) -> None:
    created, _, _ = order_events("o-bad")
    bad = Delivery(received_of(encode(created)))
    error = MalformedEvent(MalformedReason.BAD_JSON, "not JSON")
    await guarded.guard.dead_letter_malformed(bad, error, guarded.moved)
    [(_, decision)] = guarded.moved.moves
    assert isinstance(decision, DeadLetter) and decision.reason is DeadReason.MALFORMED
    assert not decision.parks
    assert await guarded.progress("o-bad") == (0, None)
