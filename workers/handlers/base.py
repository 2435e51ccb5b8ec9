"""What every downstream handler shares: simulated work, simulated faults, its tables."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from sqlalchemy import MetaData

from events import AnyEvent, OrderCreatedEvent
from events.simulation import behaviour_of
from topology.spec import DownstreamSpec
from workers.errors import NonRetryableError, TransientError
from workers.store import store_tables
from workers.tx import Tx

# A test or chaos hook: called before the handler with (event, attempts so far); may raise.
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


class Handler:
    """A downstream's effect: `check` per event (may fail), `write` per batch (in the txn)."""

    name = "null"

    def __init__(
        self,
        spec: DownstreamSpec,
        faults: FaultHook | None = None,
        outage: OutageSwitch | None = None,
    ) -> None:
        self.faults = faults
        self.outage = outage
        batched = spec.batch is not None
        self.event_time = 0.0 if batched else spec.handler_time / 1000
        self.batch_time = spec.handler_time / 1000 if batched else 0.0
        self.metadata = MetaData()
        store_tables(self.metadata)
        self.define_tables(self.metadata)

    def define_tables(self, metadata: MetaData) -> None:
        """Add the handler's own tables."""

    async def check(self, event: AnyEvent, attempts: int) -> None:
        """Do the event's work outside the transaction; raise to retry or dead-letter it."""
        if self.faults and (slow := self.faults(event, attempts)) is not None:
            await slow
        if self.outage and self.outage.on():
            raise TransientError(f"simulated outage: {self.outage.path} exists")
        if isinstance(event, OrderCreatedEvent):
            for item in event.payload.items:
                marker = behaviour_of(item.sku)
                if marker.poison:
                    raise NonRetryableError(f"SKU {item.sku} cannot be handled")
                if attempts < marker.transient_failures:
                    outage = f"{attempts + 1}/{marker.transient_failures}"
                    raise TransientError(f"SKU {item.sku}: simulated outage {outage}")
        if self.event_time:
            await asyncio.sleep(self.event_time)

    async def before_batch(self, events: Sequence[AnyEvent]) -> None:
        """Work done once per batch (the warehouse's load), outside the transaction."""
        if self.batch_time:
            await asyncio.sleep(self.batch_time)

    def write(self, tx: Tx, events: Sequence[AnyEvent]) -> None:
        """Apply a batch's effects inside the store transaction."""
