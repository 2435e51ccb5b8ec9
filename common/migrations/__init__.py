"""Alembic for the bus's databases: one environment (this folder's env.py, run on a
connection the caller holds) for every downstream store and the order service's outbox.

Each database keeps its revisions in version folders of its own, one branch per owner (the
bus's tables, a handler's tables, the outbox), so that a handler's migrations ship with the
handler. Upgrades take a lock first: the processes of one downstream start together.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, text

ENVIRONMENT = Path(__file__).parent
log = structlog.get_logger("migrations")
# Alembic narrates every run at INFO ("Context impl ..."); `upgrade` logs what changed.
logging.getLogger("alembic").setLevel(logging.WARNING)


def config_for(
    locations: Sequence[Path],
    connection: Connection | None = None,
    metadata: MetaData | None = None,
    tables: Collection[str] | None = None,
) -> Config:
    """An Alembic configuration over these revision folders, on `connection`; `metadata` and
    `tables` (the tables it may touch) are what autogenerate compares against."""
    config = Config()
    config.set_main_option("script_location", str(ENVIRONMENT))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", os.pathsep.join(str(p) for p in locations))
    config.attributes.update(connection=connection, metadata=metadata, tables=tables)
    return config


def heads(locations: Sequence[Path]) -> set[str]:
    """The newest revision of every branch in these folders."""
    return set(ScriptDirectory.from_config(config_for(locations)).get_heads())


def current(connection: Connection) -> set[str]:
    """The revisions the database is at (empty before its first migration)."""
    return set(MigrationContext.configure(connection).get_current_heads())


class MigratedElsewhere(RuntimeError):
    """The database's migrations are run by another Alembic environment (the service's own,
    which includes the bus's branch), and the bus's branch is behind there."""


def upgrade(connection: Connection, locations: Sequence[Path], database: str) -> None:
    """Bring the database to the head of every branch (a no-op when already there), and log
    what changed.

    A database that also holds revisions these folders do not know is migrated by its
    owner's environment: it is left as it is when the bus's heads are there, and refused in
    words when they are not. Runs in the caller's transaction, which commits it; take
    `migration_lock` first.
    """
    before = current(connection)
    script = ScriptDirectory.from_config(config_for(locations))
    foreign = {r for r in before if not _known(script, r)}
    if foreign:
        if set(script.get_heads()) <= before:
            return
        raise MigratedElsewhere(
            f"{database} is migrated by its own Alembic environment (it holds "
            f"{', '.join(sorted(foreign))}, which the bus does not know) and the bus's "
            f"branch is behind there: run `alembic upgrade heads` in that environment"
        )
    command.upgrade(config_for(locations, connection), "heads")
    after = current(connection)
    if after != before:
        log.info(
            "migrations.applied", database=database, before=sorted(before), after=sorted(after)
        )


@contextmanager
def migration_lock(connection: Connection, key: str) -> Iterator[None]:
    """One migrating process at a time per database (and per `key` on PostgreSQL)."""
    if connection.dialect.name == "postgresql":
        # Released when the caller's transaction ends, after the migrations commit.
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": key})
        yield
        return
    database = connection.engine.url.database
    if connection.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    # Beside the database, never on it: closing any descriptor of a file drops every POSIX
    # lock this process holds on it, SQLite's own included.
    with open(f"{database}.migrating", "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except Exception:  # alembic.util.CommandError: not one of these folders' revisions
        return False
