"""The outbox's tables under Alembic, on SQLite: migrated from empty to exactly its tables,
and a database made before migrations adopted with its rows (each order taken in at its
highest seq)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, insert, select

from common.migrations import current, heads
from producer.cli import main
from producer.db import REVISIONS, create_schema, make_engine, metadata, outbox, outbox_orders
from tests.support.migrations import drift


def _state(conn: Connection) -> tuple[set[str], list[Any], list[Any]]:
    taken_in = list(conn.execute(select(outbox_orders.c.order_id, outbox_orders.c.last_seq)))
    return current(conn), drift(conn, metadata), taken_in


async def test_the_outbox_migrates_to_exactly_its_tables(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'orders.db'}")
    try:
        await create_schema(engine)
        await create_schema(engine)  # again: nothing to do
        async with engine.connect() as conn:
            at, changes, rows = await conn.run_sync(_state)
    finally:
        await engine.dispose()
    assert at == heads([REVISIONS]) == {"outbox_0002"}
    assert changes == [] and rows == []


async def test_an_outbox_made_before_migrations_is_adopted_with_its_rows(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'orders.db'}")
    try:
        async with engine.begin() as conn:  # as databases were made before: create_all
            await conn.run_sync(lambda c: outbox.create(c))
            for seq in (1, 2):
                await conn.execute(
                    insert(outbox).values(
                        event_id=f"e-{seq}", order_id="o-1", seq=seq, event_type="order.paid",
                        occurred_at_ms=seq, body=b"{}",
                    )
                )  # fmt: skip
        await create_schema(engine)
        async with engine.connect() as conn:
            at, changes, rows = await conn.run_sync(_state)
    finally:
        await engine.dispose()
    assert at == {"outbox_0002"} and changes == [] and rows == [("o-1", 2)]


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
