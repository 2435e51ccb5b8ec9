"""Downstream stores under Alembic, on SQLite: each shipped store migrates to exactly its
tables, a store made before migrations is adopted with its rows, a handler table changed
without a migration stops the worker with what to do, and `python -m workers migrate --new`
writes the migration that fixes it."""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import insert, select

from common.migrations import current, heads
from tests.support import topologies
from tests.support.migrations import drift, forget_notifiers, notifier
from topology.spec import DownstreamSpec
from workers.api import Handler, handler_class
from workers.handlers.fraud_audit import FraudAuditHandler
from workers.handlers.inventory import InventoryHandler
from workers.handlers.loyalty import LoyaltyHandler
from workers.handlers.recommendations import RecommendationsHandler
from workers.handlers.warehouse import WarehouseHandler
from workers.process.cli import main
from workers.store.database import DownstreamStore, make_sync_engine
from workers.store.migrate import StoreSchemaError, revision_folders

D = "notifier"
SHIPPED = [
    InventoryHandler,
    LoyaltyHandler,
    RecommendationsHandler,
    WarehouseHandler,
    FraudAuditHandler,
]


async def _open(handler: Handler, store_dir: Path) -> DownstreamStore:
    return await DownstreamStore.open(
        handler.name, handler.metadata, None, store_dir, handler.revisions
    )


def _revisions_of(store: DownstreamStore, handler: Handler) -> tuple[set[str], set[str]]:
    with store.engine.connect() as conn:
        return current(conn), heads(revision_folders(handler.revisions))


@pytest.mark.parametrize("kind", SHIPPED, ids=lambda k: k.name)
async def test_each_shipped_store_migrates_to_exactly_its_tables(
    kind: type[Handler], tmp_path: Path
) -> None:
    handler = kind(DownstreamSpec())
    assert handler.revisions is not None and handler.revisions.is_dir()
    store = await _open(handler, tmp_path)
    try:
        at, newest = _revisions_of(store, handler)
        assert at == newest == {"bus_0002", f"{handler.name}_0001"}
        with store.engine.connect() as conn:
            assert drift(conn, handler.metadata) == []
    finally:
        await store.close()


async def test_a_store_made_before_migrations_is_adopted_with_its_rows(tmp_path: Path) -> None:
    handler = InventoryHandler(DownstreamSpec())
    old = make_sync_engine("inventory", None, tmp_path)
    with old.begin() as conn:  # as stores were made before migrations: create_all
        handler.metadata.create_all(conn)
        stock = handler.metadata.tables["stock"]
        conn.execute(insert(stock).values(sku="S-1", on_hand=9, reserved=1, backordered=0))
    old.dispose()
    store = await _open(handler, tmp_path)
    try:
        at, newest = _revisions_of(store, handler)
        assert at == newest
        assert await store.query(select(stock.c.sku, stock.c.on_hand)) == [("S-1", 9)]
    finally:
        await store.close()


@pytest.fixture(autouse=True)
def _logs_as_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    # The commands run here in-process: left to configure logging, they would bind the
    # loggers they first use to this test's captured stderr, closed after it.
    monkeypatch.setattr("common.startup.configure_logging", lambda *args, **kwargs: None)


@pytest.fixture
def plugins(tmp_path: Path) -> Iterator[Path]:
    """A folder on sys.path for handler modules written by the test."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    forget_notifiers()  # another test's versions, imported from its own folder
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        forget_notifiers()


def _notifier(folder: Path, version: int, module: str) -> Handler:
    notifier(folder, version, module)
    importlib.invalidate_caches()
    found = handler_class("notifier", f"{module}:Notifier")
    assert found is not None
    return found(DownstreamSpec())


def _v2_without_its_migration(plugins: Path, store_dir: Path) -> Handler:
    """A store version 1 made, and version 2's code without the migration its column needs."""
    asyncio.run(_open_and_drift(_notifier(plugins, 1, "notifier_v1"), store_dir))
    v2 = _notifier(plugins, 2, "notifier_v2")
    (plugins / "revisions" / "notifier_0002_tracking_number.py").unlink()
    return v2


def _topology(tmp_path: Path, module: str) -> Path:
    """The shipped file with a `notifier` downstream whose handler is `module`'s."""
    data = topologies.fast_data()
    data["downstreams"][D] = {"handler": f"{module}:Notifier", "shards": 1}
    topology = tmp_path / "orders.yaml"
    topology.write_text(yaml.safe_dump(data))
    return topology


def test_a_table_changed_without_a_migration_stops_the_worker(
    plugins: Path, tmp_path: Path
) -> None:
    v2 = _v2_without_its_migration(plugins, tmp_path / "stores")
    with pytest.raises(StoreSchemaError) as info:
        asyncio.run(_open(v2, tmp_path / "stores"))
    assert "sent.tracking_number" in str(info.value)
    assert "python -m workers migrate notifier --new" in str(info.value)


def test_migrate_new_writes_the_migration_the_table_change_needs(
    plugins: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    v2 = _v2_without_its_migration(plugins, tmp_path / "stores")
    topology = _topology(tmp_path, "notifier_v2")
    monkeypatch.setenv("WORKERS_STORE_DIR", str(tmp_path / "stores"))
    argv = ["migrate", D, "--file", str(topology)]

    assert main([*argv, "--new", "sent gets the tracking number"]) == 0
    written = list((plugins / "revisions").glob("notifier_0002_*.py"))
    assert len(written) == 1 and str(written[0]) in " ".join(capsys.readouterr().out.split())
    source = written[0].read_text()
    # SQLite alters tables in batches: the change is written as a batch on `sent`.
    assert "batch_alter_table('sent'" in source
    assert "add_column(sa.Column('tracking_number', sa.String(length=200)" in source
    assert "down_revision = 'notifier_0001'" in source

    assert main([*argv, "--status"]) == 0
    assert "behind" in capsys.readouterr().out
    assert main(argv) == 0
    assert "up to date" in capsys.readouterr().out
    assert asyncio.run(_open_and_drift(v2, tmp_path / "stores")) == []


async def _open_and_drift(handler: Handler, store_dir: Path) -> list[Any]:
    store = await _open(handler, store_dir)
    try:
        with store.engine.connect() as conn:
            return drift(conn, handler.metadata)
    finally:
        await store.close()


def test_new_for_several_downstreams_is_refused(tmp_path: Path, capsys: Any) -> None:
    topology = tmp_path / "orders.yaml"
    topology.write_text(yaml.safe_dump(topologies.fast_data()))
    assert main(["migrate", "--file", str(topology), "--new", "x"]) == 1
    assert "name one downstream" in capsys.readouterr().err


def test_a_first_migration_creates_the_tables_and_adopts_a_store_that_has_them(
    plugins: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    # The team's handler ran without migrations: its store made its tables when missing.
    v1 = _notifier(plugins, 1, "notifier_v1")
    shutil.rmtree(plugins / "revisions")
    v1.revisions = None
    store = asyncio.run(_open(v1, tmp_path / "old"))
    sent = v1.metadata.tables["sent"]
    asyncio.run(store.run(_insert_sent, store))
    asyncio.run(store.close())
    # It now names a revisions folder, and writes its first migration.
    v1.revisions = plugins / "revisions"
    topology = _topology(tmp_path, "notifier_v1")
    monkeypatch.setenv("WORKERS_STORE_DIR", str(tmp_path / "old"))
    assert main(["migrate", D, "--file", str(topology), "--new", "notifier tables"]) == 0
    (written,) = (plugins / "revisions").glob("notifier_0001_*.py")
    source = written.read_text()
    assert "op.create_table('sent'" in source and "if_not_exists=True" in source
    assert "branch_labels = ('notifier',)" in source
    # The old store is adopted with its row; a new one gets the table.
    assert main(["migrate", D, "--file", str(topology)]) == 0
    assert "up to date" in capsys.readouterr().out
    for folder in ("old", "new"):
        store = asyncio.run(_open(v1, tmp_path / folder))
        rows = asyncio.run(store.query(select(sent.c.order_id)))
        asyncio.run(store.close())
        assert rows == ([("o-1",)] if folder == "old" else [])


def _insert_sent(store: DownstreamStore) -> None:
    with store.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO sent (order_id, carrier) VALUES ('o-1', 'DHL')")


def test_workers_on_a_store_without_the_migration_stop_in_one_line(
    plugins: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    _v2_without_its_migration(plugins, tmp_path / "stores")
    monkeypatch.setenv("WORKERS_STORE_DIR", str(tmp_path / "stores"))
    assert main([D, "--file", str(_topology(tmp_path, "notifier_v2"))]) == 1
    err = capsys.readouterr().err
    assert "lacks sent.tracking_number" in " ".join(err.split())
    assert "Traceback" not in err
    topology = _topology(tmp_path, "notifier_v9")
    assert main([D, "--file", str(topology)]) == 1
    err = capsys.readouterr().err
    assert "cannot load handler 'notifier_v9:Notifier'" in err and "Traceback" not in err


def _posix_locks_on(path: Path) -> list[str]:
    """This process's POSIX locks on a file, as /proc/locks lists them."""
    inode = f":{path.stat().st_ino}"
    pid = str(os.getpid())
    return [
        line
        for line in Path("/proc/locks").read_text().splitlines()
        if " POSIX " in line and line.split()[4] == pid and line.split()[5].endswith(inode)
    ]


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks")
async def test_migrating_keeps_sqlites_own_locks_on_the_store(tmp_path: Path) -> None:
    # SQLite in WAL mode holds a shared lock on the database for as long as it is open; a
    # migration that closed a descriptor of the file would drop it unseen, and another
    # process could then reset the write-ahead log under this one's commits.
    handler = InventoryHandler(DownstreamSpec())
    store = await _open(handler, tmp_path)
    try:
        assert _posix_locks_on(tmp_path / "inventory.db")
    finally:
        await store.close()


def test_status_creates_no_store_and_new_without_a_difference_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    topology = tmp_path / "orders.yaml"
    topology.write_text(yaml.safe_dump(topologies.fast_data()))
    monkeypatch.setenv("WORKERS_STORE_DIR", str(tmp_path / "stores"))
    argv = ["migrate", "inventory", "--file", str(topology)]
    assert main([*argv, "--status"]) == 0
    assert "(no store yet)" in capsys.readouterr().out
    assert not (tmp_path / "stores" / "inventory.db").exists()
    assert main(argv) == 0
    folder = InventoryHandler.revisions
    assert folder is not None
    before = set(folder.iterdir())
    try:
        assert main([*argv, "--new", "nothing changed"]) == 0
        assert "do not differ; nothing written" in " ".join(capsys.readouterr().out.split())
        assert set(folder.iterdir()) == before
    finally:
        for written in set(folder.iterdir()) - before:
            written.unlink()
