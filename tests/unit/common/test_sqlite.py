"""A connection turns a database another process is writing to WAL once that write ends,
instead of failing with "database is locked" (SQLite's busy timeout does not cover it)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from common.sqlite import sqlite_pragmas

_WRITER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.execute("INSERT INTO t VALUES (1)")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def test_a_database_being_written_is_turned_to_wal_once_the_write_ends(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE t (x INTEGER)")
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), "0.5"], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "holding"
    started = time.monotonic()
    conn = sqlite3.connect(path)
    sqlite_pragmas(conn, None)
    waited = time.monotonic() - started
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert waited > 0.2, "turned to WAL while another process held the write lock?"
    assert writer.wait(10) == 0
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 1
