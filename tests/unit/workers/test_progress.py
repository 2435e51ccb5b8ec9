"""The progress cache: batched loads, and nothing stale survives a clear()."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from workers.applying.progress import ProgressCache
from workers.store.database import Progress


class SlowStore:
    """Answers progress loads from a dict, slowly, counting the queries."""

    def __init__(self, rows: dict[str, Progress]) -> None:
        self.rows = rows
        self.queries = 0
        self.read = asyncio.Event()  # set once a load has read the rows

    async def load_progress(self, order_ids: Iterable[str]) -> dict[str, Progress]:
        self.queries += 1
        read = {o: Progress(self.rows[o].last_seq) for o in order_ids if o in self.rows}
        self.read.set()
        await asyncio.sleep(0.01)  # the answer travels back while the store moves on
        return read


async def test_misses_arriving_together_are_one_query() -> None:
    store = SlowStore({"a": Progress(2)})
    cache = ProgressCache(store)  # type: ignore[arg-type]
    got = await asyncio.gather(*(cache.get(o) for o in ("a", "b", "c")))
    assert [p.last_seq for p in got] == [2, 0, 0]
    assert store.queries == 1
    assert (await cache.get("a")).last_seq == 2 and store.queries == 1  # cached now


async def test_a_load_begun_before_clear_is_not_cached_after_it() -> None:
    store = SlowStore({"a": Progress(0)})
    cache = ProgressCache(store, gather=0)  # type: ignore[arg-type]
    early = asyncio.create_task(cache.get("a"))
    await store.read.wait()
    store.rows["a"] = Progress(1)  # an old session's commit lands after that read
    cache.clear()
    assert (await early).last_seq == 0  # its waiter gets what was read
    assert (await cache.get("a")).last_seq == 1  # the next asker reads the store again
    assert store.queries == 2


async def test_the_oldest_entries_make_room() -> None:
    store = SlowStore({})
    cache = ProgressCache(store, max_entries=3, gather=0)  # type: ignore[arg-type]
    for order_id in ("a", "b", "c", "d"):
        await cache.get(order_id)
    await cache.get("a")  # evicted: read again
    assert store.queries == 5
    await cache.get("d")  # still cached
    assert store.queries == 5
