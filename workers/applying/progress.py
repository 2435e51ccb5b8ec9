"""Per-order progress, cached and loaded from the store in batches."""

from __future__ import annotations

import asyncio
import itertools

from workers.store.database import DownstreamStore, Progress


class ProgressCache:
    """order_id -> Progress; misses arriving together are loaded with one query."""

    def __init__(
        self, store: DownstreamStore, max_entries: int = 200_000, gather: float = 0.0
    ) -> None:
        self.store = store
        self.max_entries = max_entries
        self.gather = gather
        self._known: dict[str, Progress] = {}
        self._waiting: dict[str, asyncio.Future[Progress]] = {}
        self._loading: asyncio.Task[None] | None = None
        self._generation = 0  # bumped by clear(): a load begun before it is not cached

    def prefetch(self, order_id: str) -> None:
        """Start loading an order's progress now (deliveries ask early, in bursts)."""
        if order_id not in self._known and order_id not in self._waiting:
            self._waiting[order_id] = asyncio.get_running_loop().create_future()
            if self._loading is None or self._loading.done():
                self._loading = asyncio.create_task(self._load())

    async def get(self, order_id: str) -> Progress:
        """The order's progress (a fresh Progress when the store has never seen it)."""
        if (known := self._known.get(order_id)) is not None:
            return known
        self.prefetch(order_id)
        return await asyncio.shield(self._waiting[order_id])

    async def _load(self) -> None:
        await asyncio.sleep(self.gather)  # the misses of this pass of the loop (or longer)
        while self._waiting:
            batch, self._waiting = self._waiting, {}
            generation = self._generation
            try:
                found = await self.store.load_progress(batch)
            except Exception as exc:
                for fut in batch.values():
                    fut.set_exception(exc)
                continue
            self._evict(len(batch))
            for order_id, fut in batch.items():
                progress = found.get(order_id) or Progress()
                if generation == self._generation:
                    self._known[order_id] = progress
                fut.set_result(progress)

    def _evict(self, room: int) -> None:
        # Safe at any time: the store holds every committed change, a miss reloads it.
        overflow = len(self._known) + room - self.max_entries
        if overflow > 0:  # the oldest entries first; no full copy of the keys on every load
            for order_id in list(itertools.islice(self._known, overflow)):
                del self._known[order_id]

    def forget(self, order_id: str) -> None:
        """Drop one order, so the next get reads it from the store."""
        self._known.pop(order_id, None)

    def clear(self) -> None:
        """Forget everything (a new session may follow another process's work)."""
        self._known.clear()
        self._generation += 1
