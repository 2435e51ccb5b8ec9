"""Store migrations on a live bus, on SQLite and on PostgreSQL: version 2 of a team's handler
adds a column to a store that holds version 1's data, while version 1 still consumes; each
shipped store and the outbox migrate to exactly their tables on PostgreSQL too."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AsyncExitStack, nullcontext
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select

from common.migrations import current, heads
from producer.db import REVISIONS as OUTBOX_REVISIONS
from producer.db import create_schema, make_engine
from producer.db import metadata as outbox_metadata
from tests.support import topologies
from tests.support.amqp import publish_events
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.migrations import drift, forget_notifiers, notifier
from tests.support.polling import eventually
from tests.support.producer import postgres_database
from tests.support.workers import by_order, running_workers
from topology.spec import DownstreamSpec
from workers.handlers.fraud_audit import FraudAuditHandler
from workers.handlers.inventory import InventoryHandler
from workers.handlers.loyalty import LoyaltyHandler
from workers.handlers.recommendations import RecommendationsHandler
from workers.handlers.warehouse import WarehouseHandler
from workers.process.app import Workers
from workers.store.database import DownstreamStore
from workers.store.migrate import in_store_schema

pytestmark = pytest.mark.integration
D = "notifier"


async def _sent(workers: Workers) -> dict[str, str | None]:
    """order_id -> tracking_number (None where version 1 wrote the row) of every row."""
    store = workers.workers[0].store
    sent = store.metadata.tables["sent"]
    if "tracking_number" not in sent.c:  # version 1's view of the table
        return {r[0]: None for r in await store.query(select(sent.c.order_id))}
    rows = await store.query(select(sent.c.order_id, sent.c.tracking_number))
    return dict(rows)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _own_notifiers() -> Iterator[None]:
    """This test's handler versions, imported from its own folders, and forgotten after."""
    forget_notifiers()
    yield
    forget_notifiers()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_migration_adds_a_column_to_a_running_store_that_holds_data(
    backend: str, vhost: Vhost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Versions 1 and 2 of the team's handler, deployed side by side as a rolling upgrade is.
    monkeypatch.syspath_prepend(str(notifier(tmp_path / "v1", 1, "notifier_v1")))
    monkeypatch.syspath_prepend(str(notifier(tmp_path / "v2", 2, "notifier_v2")))
    data = topologies.fast_data()
    data["downstreams"] = {D: {"handler": "notifier_v1:Notifier", "shards": 2}}
    v1 = topologies.spec_of(data)
    data["downstreams"][D]["handler"] = "notifier_v2:Notifier"
    v2 = topologies.spec_of(data)
    vhost.apply(v1)
    batches = [[order_events(f"{b}-{i:02d}") for i in range(10)] for b in "abc"]
    stores = tmp_path / "stores"

    async def publish(batch: list[list[Any]]) -> None:
        await publish_events(vhost.amqp_url, [e for o in batch for e in o])

    async with AsyncExitStack() as new_stack, postgres_or_none(backend) as dsn:
        old_stack = AsyncExitStack()
        old = await old_stack.enter_async_context(
            running_workers(vhost.amqp_url, v1, stores, [D], dsn=dsn)
        )
        await publish(batches[0])
        await eventually(lambda: _count(old, 10), what="version 1 applied batch a")

        # Version 2 starts while version 1 consumes: its store is upgraded in place.
        new = await new_stack.enter_async_context(
            running_workers(vhost.amqp_url, v2, stores, [D], dsn=dsn)
        )
        store = new.workers[0].store
        columns = await store.run(_columns, store)
        assert columns == ["order_id", "carrier", "tracking_number"]
        await publish(batches[1])
        await eventually(lambda: _count(new, 20), what="both versions applied batch b")
        await old_stack.aclose()  # version 1 is retired

        await publish(batches[2])
        await eventually(lambda: _count(new, 30), what="version 2 applied batch c")
        sent = await _sent(new)
        # Batch a's rows are kept as version 1 wrote them; batch c's carry the new column.
        assert {o: sent[o] for o in (f"a-{i:02d}" for i in range(10))} == {
            f"a-{i:02d}": None for i in range(10)
        }
        assert all(sent[f"c-{i:02d}"] == f"TRK{f'c-{i:02d}'[-7:]}" for i in range(10))
        applied = by_order(await store.inbox_rows())
        assert applied == {o[0].order_id: [1, 2, 3] for b in batches for o in b}
        with store.engine.begin() as conn:
            in_store_schema(conn, D)
            assert current(conn) == {"bus_0002", "notifier_0002"}
            assert drift(conn, store.metadata) == []


def _columns(store: DownstreamStore) -> list[str]:
    with store.engine.begin() as conn:
        in_store_schema(conn, D)
        return [c["name"] for c in inspect(conn).get_columns("sent")]


async def _count(workers: Workers, n: int) -> bool:
    return len(await _sent(workers)) == n


def postgres_or_none(backend: str) -> Any:
    """A fresh PostgreSQL database's DSN for the postgresql backend, else None (SQLite)."""
    return postgres_database() if backend == "postgresql" else nullcontext()


async def test_every_shipped_store_and_the_outbox_migrate_to_their_tables_on_postgresql(
    tmp_path: Path,
) -> None:
    async with postgres_database() as dsn:
        for kind in (
            InventoryHandler,
            LoyaltyHandler,
            RecommendationsHandler,
            WarehouseHandler,
            FraudAuditHandler,
        ):
            handler = kind(DownstreamSpec())
            store = await DownstreamStore.open(
                handler.name, handler.metadata, dsn, tmp_path, handler.revisions
            )
            try:
                with store.engine.begin() as conn:
                    in_store_schema(conn, handler.name)
                    assert current(conn) == {"bus_0002", f"{handler.name}_0001"}
                    assert drift(conn, handler.metadata) == [], handler.name
            finally:
                await store.close()
        engine = make_engine(dsn)
        try:
            await create_schema(engine)
            async with engine.connect() as conn:
                assert await conn.run_sync(current) == heads([OUTBOX_REVISIONS])
                assert await conn.run_sync(drift, outbox_metadata) == []
        finally:
            await engine.dispose()
