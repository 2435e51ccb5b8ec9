"""SQLite connection settings shared by every store (order store, downstream stores)."""

from __future__ import annotations

import time
from typing import Any

# How long a connection waits for the write lock, and for another process's write to end
# before it can turn the database to WAL.
BUSY_SECONDS = 30.0


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL (readers never block the writer), no fsync per commit, wait on a busy lock."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")
        cursor.execute("PRAGMA journal_mode")
        if str(cursor.fetchone()[0]).lower() != "wal":
            _to_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _to_wal(cursor: Any) -> None:
    # Changing the journal mode needs the database to itself, and SQLite's busy timeout does
    # not wait for that: a database another process (an order service) is writing answers
    # "database is locked" at once. Its writes are short, so try again until it is free.
    deadline = time.monotonic() + BUSY_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:  # the driver's OperationalError, through any adapter
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
