"""Group commit: the effects, inbox rows and progress of many events in one transaction."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from events import AnyEvent
from workers.handlers import Handler
from workers.store import DownstreamStore, Progress


class AlreadyApplied(Exception):
    """The inbox already holds this event (another delivery got there first)."""


@dataclass(slots=True)
class _Pending:
    event_id: str
    event: AnyEvent | None  # None: only the order's parking changes
    order_id: str
    progress: Progress
    done: asyncio.Future[None]


class Committer:
    """Collects applications (and parkings) and commits them in batches, one at a time."""

    def __init__(
        self, store: DownstreamStore, handler: Handler, max_batch: int, linger: float
    ) -> None:
        self.store = store
        self.handler = handler
        self.max_batch = max_batch
        self.linger = linger
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, event: AnyEvent, event_id: str, progress: Progress) -> None:
        """Commit event with the order's new progress; returns once it is durable."""
        await self._enqueue(_Pending(event_id, event, event.order_id, progress, self._future()))

    async def park(self, order_id: str, progress: Progress) -> None:
        """Persist an order's parked event (its last seq as it is); returns once durable."""
        await self._enqueue(_Pending("", None, order_id, progress, self._future()))

    def _future(self) -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()

    async def _enqueue(self, pending: _Pending) -> None:
        self._queue.append(pending)
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        await pending.done

    async def close(self) -> None:
        """Stop the commit loop (submitters still waiting get an error)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pending in self._queue:
            if not pending.done.done():
                pending.done.set_exception(RuntimeError("committer closed"))
        self._queue.clear()

    async def _run(self) -> None:
        while self._queue:
            if self.linger and len(self._queue) < self.max_batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full(), self.linger)
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                events = [p.event for p in batch if p.event is not None]
                await self.handler.before_batch(events)
                await self._commit(batch)
                for p in batch:
                    p.done.set_result(None)
            except self.store.IntegrityError:
                await self._one_by_one(batch)
            except Exception as exc:
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(exc)

    async def _full(self) -> None:
        while len(self._queue) < self.max_batch:
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _commit(self, batch: list[_Pending]) -> None:
        await self.store.run(self._commit_sync, batch)

    def _commit_sync(self, batch: list[_Pending]) -> None:
        """On the store's thread: effects, inbox rows, progress and parkings in one transaction."""
        applied = [p for p in batch if p.event is not None]
        parked = {p.order_id: p.progress for p in batch if p.event is None}
        with self.store.transaction() as tx:
            if applied:
                self.handler.write(tx, [p.event for p in applied if p.event is not None])
                self.store.record_applied(
                    tx, [_inbox_row(p) for p in applied], {p.order_id: p.progress for p in applied}
                )
            if parked:
                self.store.record_parked(tx, parked)

    async def _one_by_one(self, batch: list[_Pending]) -> None:
        """A batch hit an event already in the inbox: find it, commit the others."""
        for p in batch:
            try:
                await self._commit([p])
                p.done.set_result(None)
            except self.store.IntegrityError:
                p.done.set_exception(AlreadyApplied(p.event_id))
            except Exception as exc:
                p.done.set_exception(exc)


def _inbox_row(p: _Pending) -> tuple[str, str, int, str]:
    assert p.event is not None
    return p.event_id, p.order_id, p.event.seq, p.event.event_type.value
