"""Handler SQL with `?` placeholders runs the same on SQLite and PostgreSQL, and a literal `?`
or `%` in a string, a quoted name or a comment reaches the database untouched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, String, Table

from tests.support.producer import postgres_database
from topology.spec import DownstreamSpec
from workers.api import Handler, Tx
from workers.store.database import DownstreamStore
from workers.store.tx import _native


class Notes(Handler):
    name = "notes"

    def define_tables(self, metadata: MetaData) -> None:
        Table(
            "notes",
            metadata,
            Column("order_id", String(64), primary_key=True),
            Column("text", String(200), nullable=False),
            Column("odd?name", String(20), nullable=True),
        )


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DownstreamStore]:
    metadata = Notes(DownstreamSpec()).metadata

    async def opened(dsn: str | None) -> DownstreamStore:
        return await DownstreamStore.open("notes", metadata, dsn, tmp_path)

    if request.param == "sqlite":
        s = await opened(None)
        yield s
        await s.close()
        return
    async with postgres_database() as dsn:
        s = await opened(dsn)
        yield s
        await s.close()


async def test_literal_question_marks_and_percents_survive(store: DownstreamStore) -> None:
    def write() -> list[tuple[object, ...]]:
        with store.transaction() as tx:
            assert isinstance(tx, Tx)
            tx.execute(
                'INSERT INTO notes (order_id, text, "odd?name") '  # a name with a ? in it
                "VALUES (?, 'paid? 100% sure, it''s done', ?) -- why? 5%",
                ("o-1", "x"),
            )
            tx.executemany(
                "INSERT INTO notes (order_id, text) VALUES (?, ? /* a ? and a % */)",
                [("o-2", "50% off?"), ("o-3", "%s ?")],
            )
            return tx.fetchall(
                "SELECT order_id, text FROM notes WHERE text LIKE '%?%' OR order_id = ? "
                "ORDER BY order_id",
                ("o-3",),
            )

    rows = await store.run(write)
    assert rows == [
        ("o-1", "paid? 100% sure, it's done"),
        ("o-2", "50% off?"),
        ("o-3", "%s ?"),
    ]


def test_the_rewrite_for_psycopg_touches_only_placeholders_and_percents() -> None:
    assert _native("SELECT ?, '?', \"?\" -- ?", "format") == "SELECT %s, '?', \"?\" -- ?"
    assert _native("SELECT 7 % 2, '100%'", "format") == "SELECT 7 %% 2, '100%%'"
    assert _native("SELECT ?, '?'", "qmark") == "SELECT ?, '?'"
