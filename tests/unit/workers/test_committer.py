"""Group commit on a real SQLite store: one transaction per batch, and one already-applied
event in a batch costs only itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.factories import order_events
from topology.spec import DownstreamSpec
from workers.applying.committer import AlreadyApplied, Committer
from workers.handlers.inventory import InventoryHandler
from workers.store.database import DownstreamStore, Progress


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[DownstreamStore, InventoryHandler]]:
    handler = InventoryHandler(DownstreamSpec())
    opened = await DownstreamStore.open(
        "inventory", handler.metadata, None, tmp_path, handler.revisions
    )
    try:
        yield opened, handler
    finally:
        await opened.close()


async def test_a_batch_commits_effects_inbox_and_progress_together(
    store: tuple[DownstreamStore, InventoryHandler],
) -> None:
    s, handler = store
    committer = Committer(s, handler, max_batch=100, linger=0.0)
    created = [order_events(f"o-{i}")[0] for i in range(5)]
    await asyncio.gather(*(committer.submit(e, str(e.event_id), Progress(1)) for e in created))
    assert len(await s.inbox_rows()) == 5
    progress = await s.load_progress([e.order_id for e in created])
    assert {o: p.last_seq for o, p in progress.items()} == {e.order_id: 1 for e in created}
    stock = dict(
        await s.query(
            handler.stock.select().with_only_columns(handler.stock.c.sku, handler.stock.c.reserved)
        )
    )
    assert stock == {"SKU-1": 10, "SKU-2": 5}  # 2 x SKU-1 and 1 x SKU-2 per order, once each
    await committer.close()


async def test_one_already_applied_event_fails_alone_and_the_others_commit(
    store: tuple[DownstreamStore, InventoryHandler],
) -> None:
    s, handler = store
    committer = Committer(s, handler, max_batch=100, linger=0.0)
    first = order_events("o-dup")[0]
    await committer.submit(first, str(first.event_id), Progress(1))
    others = [order_events(f"o-{i}")[0] for i in range(3)]
    results = await asyncio.gather(
        committer.submit(first, str(first.event_id), Progress(1)),
        *(committer.submit(e, str(e.event_id), Progress(1)) for e in others),
        return_exceptions=True,
    )
    assert isinstance(results[0], AlreadyApplied)
    assert results[1:] == [None, None, None]
    rows = await s.inbox_rows()
    assert sorted(r.order_id for r in rows) == ["o-0", "o-1", "o-2", "o-dup"]
    reserved = await s.query(handler.stock.select().with_only_columns(handler.stock.c.reserved))
    assert sorted(r[0] for r in reserved) == [4, 8]  # o-dup's effect counted once
    await committer.close()


async def test_a_parking_joins_the_group_commit_and_keeps_the_last_seq(
    store: tuple[DownstreamStore, InventoryHandler],
) -> None:
    s, handler = store
    committer = Committer(s, handler, max_batch=100, linger=0.0)
    created, paid, _ = order_events("o-park")
    await committer.submit(created, str(created.event_id), Progress(1))
    await committer.park("o-park", Progress(1, str(paid.event_id)))
    await committer.park("o-new", Progress(0, "some-event"))
    progress = await s.load_progress(["o-park", "o-new"])
    assert progress["o-park"] == Progress(1, str(paid.event_id))
    assert progress["o-new"] == Progress(0, "some-event")
    await committer.close()


async def test_a_failed_commit_fails_every_submitter_and_leaves_nothing_applied(
    store: tuple[DownstreamStore, InventoryHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    s, handler = store
    committer = Committer(s, handler, max_batch=100, linger=0.0)

    async def disk_full(entries: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(committer, "_commit", disk_full)
    created = [order_events(f"o-{i}")[0] for i in range(3)]
    results = await asyncio.gather(
        *(committer.submit(e, str(e.event_id), Progress(1)) for e in created),
        return_exceptions=True,
    )
    # A submitter told "done" would have its delivery acked with nothing stored: lost.
    assert all(isinstance(r, OSError) for r in results), f"a failed commit reported done: {results}"
    assert await s.inbox_rows() == []
    await committer.close()
