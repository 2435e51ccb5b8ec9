"""How a handler says a failure should be treated."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


class NonRetryableError(Exception):
    """A permanent business error: the event goes to the DLQ at once and its order is parked."""


class TransientError(Exception):
    """A failure expected to heal: retried through the retry tiers (any exception is, too)."""


class HandlerTimeout(TransientError):
    """A handler call ran past its downstream's handler_timeout: retried like any transient."""


async def within(seconds: float | None, call: Awaitable[None], what: str) -> None:
    """Await a handler call, failing it as HandlerTimeout once it runs past `seconds`
    (None: no limit). A deadline on the running task, not a task per call."""
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            await call
    except TimeoutError:
        if not deadline.expired():
            raise  # the handler's own timeout, not this one
        raise HandlerTimeout(f"{what} ran past the handler_timeout of {seconds:g} s") from None
