"""Cutting handler calls that run past their downstream's handler_timeout.

One periodic check serves every call in flight: a timer per call (`asyncio.timeout`) costs
each event a timer scheduled and cancelled, about a tenth of a worker's CPU per event at full
speed. A call is cut within a quarter of the timeout after it is due.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from workers.api import HandlerTimeout

CHECKS_PER_TIMEOUT = 4


class Watchdog:
    """Cancels the task of a call past its deadline; the call then fails as HandlerTimeout."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.deadlines: dict[asyncio.Task[object], float] = {}  # tasks in a call: when due
        self.cut: set[asyncio.Task[object]] = set()  # tasks cancelled for running late
        self._checker: asyncio.Task[None] | None = None

    async def run(self, call: Awaitable[None], what: str) -> None:
        """Await a handler call, failing it as HandlerTimeout once it runs past the timeout."""
        if self.seconds is None:
            await call
            return
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        self.deadlines[task] = loop.time() + self.seconds
        if self._checker is None:
            self._checker = loop.create_task(self._check())
        try:
            await call
        except asyncio.CancelledError:
            if task not in self.cut:
                raise  # cancelled by someone else: a shutdown
            self.cut.discard(task)
            task.uncancel()
            raise HandlerTimeout(
                f"{what} ran past the handler_timeout of {self.seconds:g} s"
            ) from None
        finally:
            del self.deadlines[task]
            if task in self.cut:  # cut, but the call swallowed the cancellation
                self.cut.discard(task)
                task.uncancel()

    async def _check(self) -> None:
        assert self.seconds is not None
        loop = asyncio.get_running_loop()
        try:
            while self.deadlines:
                await asyncio.sleep(self.seconds / CHECKS_PER_TIMEOUT)
                now = loop.time()
                for task, due in list(self.deadlines.items()):
                    if due <= now and task not in self.cut:
                        self.cut.add(task)
                        task.cancel()
        finally:
            self._checker = None
