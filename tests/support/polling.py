"""The suite's one poller: wait for a condition, never for a fixed time.

While it waits, it can hold invariants (`always=`): each is checked at every poll, and the
first violation fails the wait at once with what went wrong, rather than when `within`
runs out on a count that will never come (an event applied out of order, a dead letter of
a healthy order).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Check = Callable[[], Any | Awaitable[Any]]
# An invariant returns what violates it (a truthy description), or None / '' while it holds.
Invariant = Callable[[], Any | Awaitable[Any]]


class InvariantBroken(AssertionError):
    """An invariant of `always=` was violated while waiting (not a time-out)."""


async def _value(call: Callable[[], Any]) -> Any:
    result = call()
    if inspect.isawaitable(result):
        result = await result
    return result


async def violation(always: Invariant | Sequence[Invariant]) -> Any:
    """The first violation among the invariants (None when they all hold)."""
    for invariant in [always] if callable(always) else always:
        if found := await _value(invariant):
            return found
    return None


async def eventually(
    check: Check,
    *,
    within: float = 60.0,
    every: float = 0.2,
    what: str = "condition",
    always: Invariant | Sequence[Invariant] = (),
) -> Any:
    """Call check (sync or async) until it returns something truthy, and return that.

    Fails after `within` seconds naming what was awaited and the last value seen, or at the
    first poll where an invariant of `always` is violated, naming the violation.
    """
    deadline = time.monotonic() + within
    while True:
        if broken := await violation(always):
            raise InvariantBroken(f"while waiting for {what}: {broken}")
        result = await _value(check)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within}s (last: {result!r})")
        await asyncio.sleep(every)


def eventually_sync(
    check: Callable[[], Any],
    *,
    within: float = 60.0,
    every: float = 0.2,
    what: str = "condition",
    always: Invariant | Sequence[Invariant] = (),
) -> Any:
    """`eventually` for a test that is not async (it runs its own event loop)."""
    return asyncio.run(eventually(check, within=within, every=every, what=what, always=always))
