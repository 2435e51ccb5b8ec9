"""Group commit: the effects, inbox rows and progress of many events in one transaction."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import Self

from events import AnyEvent
from topology.spec import DownstreamSpec
from workers.api import Handler
from workers.applying.watchdog import Watchdog
from workers.store.database import DownstreamStore, Progress, WaitingRow

# Group commit for downstreams without a batch setting: up to this many events, without
# waiting for more (what arrives while one commit runs forms the next: batches grow with the
# load, and an idle worker commits at once).
DEFAULT_COMMIT_BATCH = 500
DEFAULT_COMMIT_LINGER = 0.0


class AlreadyApplied(Exception):
    """The inbox already holds this event (another delivery got there first)."""


@dataclass(slots=True)
class _Pending:
    event_id: str
    event: AnyEvent | None  # None: nothing applied (a parking, a held or a dropped event)
    order_id: str
    progress: Progress | None  # after the event, or the order's parking; None: unchanged
    held: WaitingRow | None = None  # to hold for its predecessor
    unwait: bool = False  # delete the event's waiting row


@dataclass
class _Batch:
    """Entries committed together; everyone waiting on it learns which were already applied."""

    entries: list[_Pending] = field(default_factory=list)
    done: asyncio.Future[set[str]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Committer:
    """Collects applications (and parkings) and commits them in batches, one at a time."""

    def __init__(
        self,
        store: DownstreamStore,
        handler: Handler,
        max_batch: int,
        linger: float,
        timeout: float | None = None,
    ) -> None:
        self.store = store
        self.watchdog = Watchdog(timeout)  # the batch's load, as each event's handler
        self.handler = handler
        self.max_batch = max_batch
        self.linger = linger
        self._batches: deque[_Batch] = deque()
        self._filled = asyncio.Event()  # the oldest batch is full
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_downstream(cls, store: DownstreamStore, handler: Handler, spec: DownstreamSpec) -> Self:
        """The committer of a downstream: its file's batch (size, linger) and handler timeout."""
        batch = spec.batch
        return cls(
            store,
            handler,
            max_batch=batch.size if batch else DEFAULT_COMMIT_BATCH,
            linger=batch.linger / 1000 if batch else DEFAULT_COMMIT_LINGER,
            timeout=spec.handler_timeout / 1000,
        )

    async def submit(
        self, event: AnyEvent, event_id: str, progress: Progress, unwait: bool = False
    ) -> None:
        """Commit event with the order's new progress (and, with unwait, delete its waiting
        row in the same transaction); returns once it is durable."""
        await self._join(_Pending(event_id, event, event.order_id, progress, unwait=unwait))

    async def park(self, order_id: str, progress: Progress) -> None:
        """Persist an order's parked event (its last seq as it is); returns once durable."""
        await self._join(_Pending("", None, order_id, progress))

    async def hold(self, row: WaitingRow) -> None:
        """Hold an event for its predecessor in the waiting table; returns once durable."""
        await self._join(_Pending(row.event_id, None, row.order_id, None, held=row))

    async def unwait(self, event_id: str, order_id: str) -> None:
        """Delete a held event's waiting row; returns once durable."""
        await self._join(_Pending(event_id, None, order_id, None, unwait=True))

    async def _join(self, pending: _Pending) -> None:
        if not self._batches or len(self._batches[-1].entries) >= self.max_batch:
            self._batches.append(_Batch())
        batch = self._batches[-1]
        batch.entries.append(pending)
        if len(self._batches[0].entries) >= self.max_batch:
            self._filled.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        if pending.event_id in await batch.done and pending.event is not None:
            raise AlreadyApplied(pending.event_id)

    async def close(self) -> None:
        """Stop the commit loop (submitters still waiting get an error)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for batch in self._batches:
            if not batch.done.done():
                batch.done.set_exception(RuntimeError("committer closed"))
        self._batches.clear()

    async def _run(self) -> None:
        while self._batches:
            if self.linger and len(self._batches[0].entries) < self.max_batch:
                self._filled.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._filled.wait(), self.linger)
            else:
                # No linger: what the lanes submit in this pass of the loop joins the batch;
                # under load the next batch gathers while this one commits.
                await asyncio.sleep(0)
            batch = self._batches.popleft()
            try:
                events = [p.event for p in batch.entries if p.event is not None]
                await self.watchdog.run(self.handler.before_batch(events), "batch handler")
                await self._commit(batch.entries)
                batch.done.set_result(set())
            except self.store.IntegrityError:
                await self._settle_one_by_one(batch)
            except Exception as exc:
                batch.done.set_exception(exc)

    async def _settle_one_by_one(self, batch: _Batch) -> None:
        try:
            batch.done.set_result(await self._one_by_one(batch.entries))
        except Exception as exc:
            batch.done.set_exception(exc)

    async def _commit(self, entries: list[_Pending]) -> None:
        await self.store.run(self._commit_sync, entries)

    def _commit_sync(self, entries: list[_Pending]) -> None:
        """On the store's thread: effects, inbox rows, progress and parkings in one transaction."""
        applied = [p for p in entries if p.event is not None]
        parked = {
            p.order_id: p.progress for p in entries if p.event is None and p.progress is not None
        }
        held = [p.held for p in entries if p.held is not None]
        dropped = [p.event_id for p in entries if p.unwait]
        with self.store.transaction() as tx:
            if held:
                self.store.record_waiting(tx, held)
            if dropped:
                self.store.drop_waiting(tx, dropped)
            if applied:
                progress = {p.order_id: p.progress for p in applied if p.progress is not None}
                self.store.record_applied(tx, [_inbox_row(p) for p in applied], progress)
                # Last: rows other processes also update (stock, points) stay locked only
                # until the commit right after.
                self.handler.write(tx, [p.event for p in applied if p.event is not None])
            if parked:
                self.store.record_parked(tx, parked)

    async def _one_by_one(self, entries: list[_Pending]) -> set[str]:
        """A batch hit an event already in the inbox: commit the others; return those it holds."""
        already: set[str] = set()
        for p in entries:
            try:
                await self._commit([p])
            except self.store.IntegrityError:
                already.add(p.event_id)
        return already


def _inbox_row(p: _Pending) -> tuple[str, str, int, str]:
    assert p.event is not None
    return p.event_id, p.order_id, p.event.seq, p.event.event_type.value
