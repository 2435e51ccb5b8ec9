"""Outbox ids the relay's cursor has passed over without seeing them.

On PostgreSQL an id comes from a sequence when the row is inserted, but rows become visible
when their transactions commit, in whatever order those end. A reader that resumes after
the highest id it has seen would skip a row whose transaction commits after a later id's:
the row would stay unsent until the relay restarts, and its order's later events would wait
for it. The relay looks for each skipped id again until it appears, or until it is so old
that its transaction must have rolled back (a rolled-back insert leaves its id unused).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

GAP_HORIZON = 120.0  # seconds: no order-service transaction stays open this long
MAX_TRACKED = 10_000  # a jump wider than this (a reset sequence) is not a gap to track


class Gaps:
    """Skipped ids, each with when it was first skipped."""

    def __init__(self, horizon: float = GAP_HORIZON) -> None:
        self.horizon = horizon
        self.skipped: dict[int, float] = {}

    def __bool__(self) -> bool:
        return bool(self.skipped)

    def note(self, after: int, ids: Sequence[int], now: float) -> None:
        """Record the ids missing between `after` and each id read next (ids ascending)."""
        expected = after + 1
        for found in ids:
            room = MAX_TRACKED - len(self.skipped)
            if found > expected and found - expected <= room:
                for missing in range(expected, found):
                    self.skipped.setdefault(missing, now)
            expected = max(expected, found + 1)

    def pending(self) -> list[int]:
        """The skipped ids still worth looking for, ascending."""
        return sorted(self.skipped)

    def found(self, ids: Iterable[int]) -> None:
        """These skipped ids have been read at last."""
        for i in ids:
            self.skipped.pop(i, None)

    def expire(self, now: float) -> None:
        """Forget ids skipped longer ago than the horizon: their inserts rolled back."""
        old = [i for i, since in self.skipped.items() if now - since > self.horizon]
        for i in old:
            del self.skipped[i]

    def clear(self) -> None:
        """Forget everything (the relay reads from the first unsent row again)."""
        self.skipped.clear()
