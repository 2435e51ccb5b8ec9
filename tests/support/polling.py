"""The suite's one poller: wait for a condition, never for a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

Check = Callable[[], Any | Awaitable[Any]]


async def eventually(
    check: Check, *, within: float = 60.0, every: float = 0.2, what: str = "condition"
) -> Any:
    """Call check (sync or async) until it returns something truthy, and return that.

    Fails after `within` seconds naming what was awaited and the last value seen.
    """
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within}s (last: {result!r})")
        await asyncio.sleep(every)


def eventually_sync(
    check: Callable[[], Any], *, within: float = 60.0, every: float = 0.2, what: str = "condition"
) -> Any:
    """`eventually` for a test that is not async (it runs its own event loop)."""
    return asyncio.run(eventually(check, within=within, every=every, what=what))
