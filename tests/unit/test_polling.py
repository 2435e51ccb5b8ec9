"""The suite's poller: it returns what the check found, fails naming what it awaited, and
fails at the first poll that sees an invariant broken, not when its time runs out."""

from __future__ import annotations

import time

import pytest

from tests.support.polling import eventually
from tests.support.workers import InboxRow, out_of_order


async def test_returns_the_first_truthy_value() -> None:
    calls = iter([0, None, "found"])
    assert await eventually(lambda: next(calls), every=0) == "found"


async def test_fails_naming_what_it_awaited_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"all applied not met within 0.05s \(last: \[\]\)"):
        await eventually(lambda: [], within=0.05, every=0.01, what="all applied")


async def test_a_broken_invariant_fails_at_once_with_its_violation() -> None:
    rows: list[InboxRow] = [InboxRow("o-1", 1)]

    async def in_order() -> str | None:
        return out_of_order(rows, "inventory")

    started = time.monotonic()
    with pytest.raises(AssertionError) as failed:
        rows.append(InboxRow("o-2", 2))  # o-2's seq 2 applied before its seq 1: a gap applied
        await eventually(lambda: False, within=60, what="all applied", always=in_order)
    assert time.monotonic() - started < 1, "the violation waited for the time-out"
    assert str(failed.value) == (
        "while waiting for all applied: inventory applied 1 order(s) out of seq order (o-2: [2])"
    )


def test_out_of_order_sees_gaps_repeats_and_reversals_but_not_progress() -> None:
    progress = [InboxRow("a", 1), InboxRow("b", 1), InboxRow("a", 2), InboxRow("a", 3)]
    assert out_of_order(progress) is None
    for wrong in ([("a", 2)], [("a", 1), ("a", 1)], [("a", 1), ("a", 3), ("a", 2)]):
        assert out_of_order([InboxRow(o, s) for o, s in wrong])
