"""The simulation around a real handler, for the demo, the benchmarks and the tests only.

The workers never know of it: `python -m simulation workers` (or a test's `build`) puts it
around each handler from outside (`simulated`). Before the real handler runs:
- the file's `handler_time` is spent per event (per batch for a batching downstream);
- a `POISON-` SKU fails for good, a `FLAKY<n>-` SKU fails n times, and a `CRASH-` SKU kills
  the process (`simulation.skus`);
- an injected fault hook may raise, be slow or hang;
- the outage switch fails every event while its file exists.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from events import AnyEvent, OrderCreatedEvent
from simulation.skus import behaviour_of
from topology.spec import DownstreamSpec
from workers.api import Handler, NonRetryableError, TransientError, Tx
from workers.process.app import HandlerWrap

# Injected failures (tests, the demo): raise, or return an awaitable to be slow or hang.
FaultHook = Callable[[AnyEvent, int], Awaitable[None] | None]
_OUTAGE_RECHECK_SECONDS = 0.25


class OutageSwitch:
    """A game-day switch: on while its file exists (checked at most every 0.25 s)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._on = False
        self._checked = float("-inf")

    def on(self) -> bool:
        """Whether the simulated outage is on now."""
        now = time.monotonic()
        if now - self._checked >= _OUTAGE_RECHECK_SECONDS:
            self._on, self._checked = self.path.exists(), now
        return self._on


class Simulated(Handler):
    """A real handler with the simulation in front of it; its tables are the real one's."""

    def __init__(
        self,
        inner: Handler,
        spec: DownstreamSpec,
        faults: FaultHook | None = None,
        outage: OutageSwitch | None = None,
    ) -> None:
        # No Handler.__init__: the store's tables are the inner handler's.
        self.inner, self.spec, self.metadata = inner, spec, inner.metadata
        self.name, self.revisions = inner.name, inner.revisions
        self.faults = faults
        self.outage = outage
        batched = spec.batch is not None
        self.event_time = 0.0 if batched else spec.handler_time / 1000
        self.batch_time = spec.handler_time / 1000 if batched else 0.0

    def __getattr__(self, attribute: str) -> Any:
        # The real handler's own attributes (its tables, say) as the wrapper's.
        return getattr(self.inner, attribute)

    async def check(self, event: AnyEvent, attempts: int) -> None:
        """The simulated faults and time, then the real handler's check."""
        if self.faults and (slow := self.faults(event, attempts)) is not None:
            await slow
        if self.outage and self.outage.on():
            raise TransientError(f"simulated outage: {self.outage.path} exists")
        if isinstance(event, OrderCreatedEvent):
            for item in event.payload.items:
                marker = behaviour_of(item.sku)
                if marker.crash:  # as a segfault in a native library would
                    os.kill(os.getpid(), signal.SIGKILL)
                if marker.poison:
                    raise NonRetryableError(f"SKU {item.sku} cannot be handled")
                if attempts < marker.transient_failures:
                    outage = f"{attempts + 1}/{marker.transient_failures}"
                    raise TransientError(f"SKU {item.sku}: simulated outage {outage}")
        if self.event_time:
            await asyncio.sleep(self.event_time)
        await self.inner.check(event, attempts)

    async def before_batch(self, events: Sequence[AnyEvent]) -> None:
        """The simulated load time, then the real handler's."""
        if self.batch_time:
            await asyncio.sleep(self.batch_time)
        await self.inner.before_batch(events)

    def write(self, tx: Tx, events: Sequence[AnyEvent]) -> None:
        """The real handler's effects."""
        self.inner.write(tx, events)


def simulated(faults: FaultHook | None = None, outage_dir: Path | None = None) -> HandlerWrap:
    """The wrap that puts the simulation around each downstream's handler (with a game day's
    outage switch at `<outage_dir>/<downstream>`)."""

    def wrap(name: str, spec: DownstreamSpec, handler: Handler) -> Handler:
        switch = OutageSwitch(outage_dir / name) if outage_dir else None
        return Simulated(handler, spec, faults, switch)

    return wrap
