"""A transaction on a downstream's store, as handlers see it: plain SQL on the DB-API.

A handler's writes run in the same transaction as the inbox rows and the orders' progress
of the events it was given, so its effect commits with them or not at all. Statements are
written with `?` placeholders and run on SQLite and PostgreSQL alike (`ON CONFLICT ...
DO UPDATE` is the same in both). A `?` in quotes or a comment is text and a `?` anywhere else
a placeholder: write PostgreSQL's jsonb `?` operators as their functions (`jsonb_exists`).
The driver's own API is used directly, without an ORM's per-statement work, because this is
the hot path of every event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

Row = tuple[Any, ...]
# A statement with `?` placeholders, rewritten once per dialect.
_PARAMSTYLE = {"sqlite": "qmark", "postgresql": "format"}


@cache
def _native(sql: str, paramstyle: str) -> str:
    """The statement in the driver's placeholder style: for psycopg (`format`), each `?`
    outside quotes and comments becomes `%s`, and every literal `%` is doubled."""
    if paramstyle != "format":
        return sql
    out: list[str] = []
    at, end = 0, len(sql)
    while at < end:
        char = sql[at]
        if char in "'\"":  # a string or a quoted name: to its closing quote ('' escapes one)
            close = at + 1
            while close < end and not (sql[close] == char and sql[close + 1 : close + 2] != char):
                close += 2 if sql[close] == char else 1
            out.append(sql[at : close + 1].replace("%", "%%"))
            at = close + 1
            continue
        if sql.startswith("--", at) or sql.startswith("/*", at):
            close = sql.find("\n" if char == "-" else "*/", at)
            close = end if close < 0 else close + (1 if char == "-" else 2)
            out.append(sql[at:close].replace("%", "%%"))
            at = close
            continue
        out.append("%s" if char == "?" else "%%" if char == "%" else char)
        at += 1
    return "".join(out)


class Tx:
    """The statements of one transaction (it commits or rolls back as a whole)."""

    def __init__(self, cursor: Any, dialect: str) -> None:
        self.cursor = cursor
        self.dialect = dialect
        self._style = _PARAMSTYLE[dialect]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the rows it changed (-1 where the driver cannot tell)."""
        self.cursor.execute(_native(sql, self._style), params)
        return int(self.cursor.rowcount)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for many rows (one round trip per batch where the driver can)."""
        rows = list(rows)
        if rows:
            self.cursor.executemany(_native(sql, self._style), rows)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a query; every row."""
        self.cursor.execute(_native(sql, self._style), params)
        return [tuple(r) for r in self.cursor.fetchall()]

    def select_in(self, sql: str, keys: Sequence[Any], width: int = 1) -> list[Row]:
        """Run `sql`, whose `{in}` is filled with one placeholder group per key.

        `width` > 1 matches tuples of columns: `WHERE (a, b) IN {in}` with keys of pairs.
        """
        if not keys:
            return []
        group = "?" if width == 1 else "(" + ", ".join("?" * width) + ")"
        placeholders = "(" + ", ".join([group] * len(keys)) + ")"
        params = list(keys) if width == 1 else [v for key in keys for v in key]
        return self.fetchall(sql.replace("{in}", placeholders), params)


def upsert_sql(
    table: str, key: Sequence[str], columns: Sequence[str], update: Sequence[str] | None = None
) -> str:
    """INSERT ... ON CONFLICT (key) DO UPDATE SET `update` (default: every other column)."""
    names = [*key, *columns]
    values = ", ".join("?" * len(names))
    updates = ", ".join(f"{c} = excluded.{c}" for c in (columns if update is None else update))
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({values}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


def insert_sql(table: str, columns: Sequence[str]) -> str:
    """INSERT INTO table (columns) VALUES (?, ...)."""
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
