"""The project as a user installs it: `pip install` into a fresh venv at the locked versions,
without the postgres extra. The installed command answers, no PostgreSQL driver is there, and
the unit suite passes on SQLite alone (its PostgreSQL cases skip, saying why)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.cli import package_version
from tests.support.required import REQUIRE_ENV

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(900)


def _run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=_without_postgres(),
        capture_output=True,
        text=True,
        timeout=800,
        check=False,
    )


def _without_postgres() -> dict[str, str]:
    """This install has no PostgreSQL driver by design: the run must not require it to."""
    env = dict(os.environ)
    names = [w.strip() for w in env.get(REQUIRE_ENV, "").split(",")]
    env[REQUIRE_ENV] = ",".join(w for w in names if w and w != "postgres")
    return env


def test_a_sqlite_only_install_works_and_its_tests_pass(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", venv).returncode == 0
    python, bin_ = venv / "bin" / "python", venv / "bin"
    installed = _run(
        python, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", f"{ROOT}[dev]"
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    version = _run(bin_ / "orderbus", "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"orderbus {package_version()}"
    for program in ("topology", "workers", "producer"):
        answered = _run(bin_ / "orderbus", program, "--version", cwd=tmp_path)
        assert answered.returncode == 0, answered.stderr
        assert answered.stdout.strip() == f"orderbus {program} {package_version()}"
    for driver in ("asyncpg", "psycopg"):
        assert _run(python, "-c", f"import {driver}").returncode != 0, f"{driver} is installed"

    # The outbox's migrations and the producer API on SQLite, from the installed package.
    db = tmp_path / "shop.db"
    migrated = _run(
        bin_ / "orderbus", "producer", "migrate", "--db", f"sqlite+aiosqlite:///{db}", cwd=tmp_path
    )
    assert migrated.returncode == 0, migrated.stderr
    emitted = _run(python, "-c", _EMIT.format(db=db), cwd=tmp_path)
    assert emitted.returncode == 0 and emitted.stdout.strip() == "[(1,)]", emitted.stderr

    tests = _run(
        python, "-m", "pytest", "tests/unit", "-q", "-p", "no:cacheprovider", "-x",
        "--ignore=tests/unit/test_lock.py",  # packaging is the dev install's, not a user's
        cwd=ROOT,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-4000:]
    assert "skipped" in tests.stdout and "postgres extra is not installed" in tests.stdout


_EMIT = """
import sqlite3
from decimal import Decimal
from producer.api import LineItem, created, emit
with sqlite3.connect("{db}") as conn:
    emit(conn, created("o-1", "c-1", [LineItem(sku="S", qty=1, price=Decimal("1.00"))]))
print(sqlite3.connect("{db}").execute("SELECT seq FROM outbox").fetchall())
"""
