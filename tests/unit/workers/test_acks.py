"""The ack tracker's bookkeeping: one multiple ack over the completed prefix, stragglers singly,
hand-backs nacked at once and never covered by a later multiple ack."""

from __future__ import annotations

from dataclasses import dataclass, field

from workers.session.acks import Acker

LIMIT = 8


@dataclass
class Recorder:
    """Records the frames an Acker sends (bookkeeping only, no broker semantics)."""

    frames: list[tuple[str, int, bool]] = field(default_factory=list)
    closed: bool = False

    def ack(self, tag: int, multiple: bool = False) -> None:
        if self.closed:
            raise ConnectionError("channel closed")
        self.frames.append(("ack", tag, multiple))

    def nack(self, tag: int, requeue: bool = True) -> None:
        if self.closed:
            raise ConnectionError("channel closed")
        self.frames.append(("nack", tag, requeue))


def _acker(rec: Recorder) -> Acker:
    return Acker(rec, every=10_000, straggler_limit=LIMIT, patience=0)


async def test_contiguous_completions_are_one_multiple_ack() -> None:
    rec = Recorder()
    acker = _acker(rec)
    for tag in (3, 1, 2, 5):
        acker.complete(tag)
    acker.flush()
    assert rec.frames == [("ack", 3, True)]
    acker.complete(4)
    acker.flush()
    assert rec.frames[-1] == ("ack", 5, True)
    assert acker.low == 6 and not acker.done


async def test_every_nth_completion_flushes_without_waiting_for_the_timer() -> None:
    rec = Recorder()
    acker = Acker(rec, every=3, straggler_limit=LIMIT)
    for tag in (1, 2, 3):
        acker.complete(tag)
    assert rec.frames == [("ack", 3, True)]


async def test_stragglers_are_acked_singly_and_skipped_later() -> None:
    rec = Recorder()
    acker = _acker(rec)
    late = range(2, 2 + LIMIT)
    for tag in late:
        acker.complete(tag)
    acker.flush()
    assert [f for f in rec.frames if f[2]] == []  # tag 1 still open: no multiple ack
    assert [f[1] for f in rec.frames] == list(late)
    rec.frames.clear()
    acker.complete(1)
    acker.flush()
    # Tag 1 alone needs acking; everything after it already was.
    assert rec.frames == [("ack", 1, True)]
    assert acker.low == 2 + LIMIT


async def test_fewer_stragglers_than_the_limit_wait_for_the_prefix() -> None:
    rec = Recorder()
    acker = _acker(rec)
    for tag in range(2, 1 + LIMIT):
        acker.complete(tag)
    acker.flush()
    assert rec.frames == []


async def test_hand_back_requeues_at_once_and_the_prefix_moves_past_it() -> None:
    rec = Recorder()
    acker = _acker(rec)
    acker.complete(1)
    acker.hand_back(2)
    assert rec.frames == [("nack", 2, True)]  # before any ack could cover it
    acker.complete(3)
    acker.flush()
    assert rec.frames[1:] == [("ack", 3, True)]
    assert acker.low == 4


async def test_a_hand_back_is_never_covered_by_a_multiple_ack() -> None:
    rec = Recorder()
    acker = _acker(rec)
    for tag in (1, 3, 5):
        acker.complete(tag)
    acker.hand_back(4)
    acker.hand_back(2)
    acker.flush()
    nacks = {tag: i for i, (kind, tag, _) in enumerate(rec.frames) if kind == "nack"}
    covering = [
        (i, tag) for i, (kind, tag, multiple) in enumerate(rec.frames) if kind == "ack" and multiple
    ]
    assert covering == [(2, 5)] and set(nacks) == {2, 4}
    assert all(nacks[t] < i for i, top in covering for t in nacks if t <= top)
    assert acker.low == 6


async def test_a_closed_channel_stops_settling_without_raising() -> None:
    rec = Recorder(closed=True)
    acker = _acker(rec)
    acker.complete(1)
    acker.hand_back(2)
    acker.flush()
    assert acker.gone and rec.frames == []


async def test_stragglers_wait_for_a_briefly_blocked_prefix() -> None:
    rec = Recorder()
    acker = Acker(rec, every=10_000, straggler_limit=LIMIT, patience=60)
    for tag in range(2, 2 + LIMIT):
        acker.complete(tag)
    acker.flush()
    assert rec.frames == []  # blocked only now: one multiple ack will do once 1 completes
    acker.complete(1)
    acker.flush()
    assert rec.frames == [("ack", 1 + LIMIT, True)]


async def test_the_acked_count_is_every_delivery_acked_once_and_no_hand_back() -> None:
    rec = Recorder()
    counts: list[int] = []
    acker = Acker(rec, every=10_000, straggler_limit=LIMIT, patience=0, on_acked=counts.append)
    acker.hand_back(1)  # nacked: never counted as acked
    stragglers = range(3, 3 + LIMIT)
    for tag in stragglers:
        acker.complete(tag)
    acker.flush()  # 2 is slow: the stragglers are acked singly
    acker.complete(2)
    acker.complete(3 + LIMIT)
    acker.flush()  # the prefix closes over 2 and one more; the stragglers are not acked again
    acked_tags = {t for kind, t, multiple in rec.frames if kind == "ack" and not multiple}
    assert acked_tags == set(stragglers)
    assert rec.frames[-1] == ("ack", 3 + LIMIT, True)
    assert counts == [LIMIT, 2]


async def test_patience_is_per_blocking_delivery() -> None:
    """A prefix that keeps moving is not stuck: each delivery that blocks it gets the full
    patience before completions past it are acked one by one (single acks cost a quorum
    queue a log entry each)."""
    rec, now = Recorder(), [0.0]
    acker = Acker(rec, every=10_000, straggler_limit=LIMIT, patience=1.0, clock=lambda: now[0])
    late = range(3, 3 + LIMIT)
    for tag in late:
        acker.complete(tag)
    acker.flush()  # 1 and 2 are slow
    now[0] = 0.6
    acker.complete(1)
    acker.flush()  # the prefix moves to 1; 2 blocks it from now on
    assert rec.frames == [("ack", 1, True)]
    now[0] = 1.2  # 1.2 s since the prefix first stopped, 0.6 s since 2 blocks it
    acker.flush()
    assert rec.frames == [("ack", 1, True)]
    now[0] = 1.7  # 2 has blocked for longer than the patience
    acker.flush()
    assert rec.frames[1:] == [("ack", tag, False) for tag in late]
