"""The order service's database under Alembic, on SQLite: migrated from empty to exactly its
tables, and a database made before migrations adopted with its rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, insert, select

from common.migrations import current, heads
from producer.cli import main
from producer.db import REVISIONS, create_schema, make_engine, metadata, orders
from tests.support.migrations import drift


def _state(conn: Connection) -> tuple[set[str], list[Any], list[Any]]:
    return current(conn), drift(conn, metadata), list(conn.execute(select(orders.c.order_id)))


async def test_the_outbox_migrates_to_exactly_its_tables(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'orders.db'}")
    try:
        await create_schema(engine)
        await create_schema(engine)  # again: nothing to do
        async with engine.connect() as conn:
            at, changes, rows = await conn.run_sync(_state)
    finally:
        await engine.dispose()
    assert at == heads([REVISIONS]) == {"outbox_0001"}
    assert changes == [] and rows == []


async def test_an_outbox_made_before_migrations_is_adopted_with_its_rows(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'orders.db'}")
    try:
        async with engine.begin() as conn:  # as databases were made before: create_all
            await conn.run_sync(metadata.create_all)
            await conn.execute(
                insert(orders).values(
                    order_id="o-1", customer_id="c-1", state="created", last_seq=1,
                    total=1, currency="EUR", updated_at_ms=0,
                )
            )  # fmt: skip
        await create_schema(engine)
        async with engine.connect() as conn:
            at, changes, rows = await conn.run_sync(_state)
    finally:
        await engine.dispose()
    assert at == {"outbox_0001"} and changes == [] and rows == [("o-1",)]


def test_migrate_status_looks_and_migrate_upgrades(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    # In-process, the command would bind the loggers it first uses to this test's stderr.
    monkeypatch.setattr("common.startup.configure_logging", lambda *args, **kwargs: None)
    db = tmp_path / "orders.db"
    argv = ["migrate", "--db", f"sqlite+aiosqlite:///{db}"]
    assert main([*argv, "--status"]) == 0
    assert "behind" in capsys.readouterr().out and not db.exists()
    assert main(argv) == 0
    assert "up to date" in capsys.readouterr().out
    assert main([*argv, "--status"]) == 0
    assert "up to date" in capsys.readouterr().out
