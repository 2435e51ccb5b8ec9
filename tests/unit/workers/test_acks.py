"""The ack tracker's bookkeeping: one multiple ack over the completed prefix, stragglers singly."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tests.support.polling import eventually
from workers import acks
from workers.acks import Acker


@dataclass
class Recorder:
    """Records the ack frames an Acker sends (bookkeeping only, no broker semantics)."""

    frames: list[tuple[str, int, bool]] = field(default_factory=list)

    async def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.frames.append(("ack", tag, multiple))

    async def basic_nack(self, tag: int, requeue: bool = True) -> None:
        self.frames.append(("nack", tag, requeue))


async def test_contiguous_completions_are_one_multiple_ack() -> None:
    rec = Recorder()
    acker = Acker(rec, every=1000)  # type: ignore[arg-type]
    for tag in (3, 1, 2, 5):
        acker.complete(tag)
    await acker.flush()
    assert rec.frames == [("ack", 3, True)]
    acker.complete(4)
    await acker.flush()
    assert rec.frames[-1] == ("ack", 5, True)
    assert acker.low == 6 and not acker.done


async def test_stragglers_are_acked_singly_and_skipped_later() -> None:
    rec = Recorder()
    acker = Acker(rec, every=10_000)  # type: ignore[arg-type]
    late = range(2, 2 + acks.STRAGGLER_LIMIT)
    for tag in late:
        acker.complete(tag)
    await acker.flush()
    assert [f for f in rec.frames if f[2]] == []  # tag 1 still open: no multiple ack
    assert [f[1] for f in rec.frames] == list(late)
    rec.frames.clear()
    acker.complete(1)
    await acker.flush()
    # Tag 1 alone needs acking; everything after it already was.
    assert rec.frames == [("ack", 1, True)]
    assert acker.low == 2 + acks.STRAGGLER_LIMIT


async def test_hand_back_requeues_and_the_prefix_moves_past_it() -> None:
    rec = Recorder()
    acker = Acker(rec, every=10_000)  # type: ignore[arg-type]
    acker.complete(1)
    acker.hand_back(2)
    acker.complete(3)
    await acker.flush()
    assert ("nack", 2, True) in rec.frames
    assert ("ack", 3, True) in rec.frames
    assert acker.low == 4


@dataclass
class SlowRecorder(Recorder):
    """Each frame yields to the loop, where `during` may hand another delivery back."""

    during: list[object] = field(default_factory=list)

    async def basic_nack(self, tag: int, requeue: bool = True) -> None:
        await super().basic_nack(tag, requeue)
        for act in self.during:
            act()  # type: ignore[operator]
        self.during.clear()
        await asyncio.sleep(0)


async def test_a_delivery_handed_back_during_a_flush_is_requeued_never_acked() -> None:
    rec = SlowRecorder()
    acker = Acker(rec, every=10_000, interval=0.001)  # type: ignore[arg-type]
    acker.complete(1)
    acker.hand_back(2)
    acker.complete(3)
    # While the nack of 2 is on its way, 4 is handed back and 5 completes.
    rec.during = [lambda: acker.hand_back(4), lambda: acker.complete(5)]
    await acker.flush()
    await eventually(
        lambda: ("nack", 4, True) in rec.frames and acker.low == 6,
        within=2,
        every=0.002,
        what="the follow-up flush",
    )
    nack4 = rec.frames.index(("nack", 4, True))
    covering = [
        i
        for i, (kind, tag, multiple) in enumerate(rec.frames)
        if kind == "ack" and (tag == 4 or (multiple and tag >= 4))
    ]
    assert all(i > nack4 for i in covering), rec.frames  # 4 is settled by its nack only
    assert ("ack", 5, True) in rec.frames and acker.low == 6 and not acker.requeue
