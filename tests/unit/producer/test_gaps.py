"""The ids a relay's cursor passes over are looked for again, until found or too old."""

from __future__ import annotations

from producer.gaps import MAX_TRACKED, Gaps


def test_ids_missing_below_what_was_read_are_skipped_and_then_found() -> None:
    gaps = Gaps(horizon=60)
    gaps.note(after=0, ids=[1, 2, 5, 6, 9], now=0.0)
    assert gaps.pending() == [3, 4, 7, 8]
    gaps.note(after=9, ids=[10, 11], now=1.0)  # contiguous: nothing new
    gaps.found([4, 8])
    assert gaps.pending() == [3, 7]


def test_a_skipped_id_older_than_the_horizon_is_a_rollback_and_forgotten() -> None:
    gaps = Gaps(horizon=60)
    gaps.note(after=0, ids=[2], now=0.0)
    gaps.note(after=2, ids=[4], now=50.0)
    gaps.expire(now=70.0)
    assert gaps.pending() == [3]
    gaps.expire(now=111.0)
    assert not gaps


def test_a_jump_wider_than_can_be_tracked_is_not_a_gap() -> None:
    gaps = Gaps()
    gaps.note(after=0, ids=[MAX_TRACKED + 10], now=0.0)
    assert not gaps
    gaps.note(after=0, ids=[3], now=0.0)
    gaps.clear()
    assert gaps.pending() == []
