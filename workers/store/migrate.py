"""A downstream store's schema under Alembic, upgraded in place when a worker opens it.

The bus's tables (inbox, progress, leases) are one branch, with revisions in
`workers/revisions`; a handler's tables are another, labelled with its name, with revisions
in the folder its `revisions` names. A handler without revisions has its tables created when
missing and never changed. Either way the store must then hold every table and column the
code uses, or the worker refuses to start rather than fail on every event.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import Connection, MetaData, create_engine, inspect, text

from common.migrations import config_for, migration_lock, upgrade
from workers.store.tables import handler_tables

BUS_REVISIONS = Path(__file__).parent / "revisions"


class StoreSchemaError(RuntimeError):
    """The store lacks tables or columns its handler uses: a migration is missing."""


def revision_folders(handler_revisions: Path | None) -> list[Path]:
    """The revision folders of a store: the bus's, and its handler's when it has them."""
    return [BUS_REVISIONS, *([handler_revisions] if handler_revisions else [])]


def in_store_schema(conn: Connection, downstream: str, create: bool = False) -> None:
    """On PostgreSQL, make the downstream's schema the transaction's own (Alembic's version
    table, its operations and its inspection then land there); SQLite has one per file."""
    if conn.dialect.name == "postgresql":
        if create:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{downstream}"'))
        conn.execute(text(f'SET LOCAL search_path TO "{downstream}"'))


def migrate_store(
    conn: Connection, downstream: str, metadata: MetaData, handler_revisions: Path | None
) -> None:
    """Bring a store to its newest schema, in the caller's transaction."""
    with migration_lock(conn, f"store:{downstream}"):
        in_store_schema(conn, downstream, create=True)
        upgrade(conn, revision_folders(handler_revisions), downstream)
        if handler_revisions is None:
            metadata.create_all(conn, handler_tables(metadata))
        check_tables(conn, downstream, metadata)


def check_tables(conn: Connection, downstream: str, metadata: MetaData) -> None:
    """Raise StoreSchemaError unless every table and column of `metadata` exists."""
    inspector = inspect(conn)
    missing: list[str] = []
    for table in metadata.tables.values():
        if not inspector.has_table(table.name):
            missing.append(f"table {table.name}")
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        missing += [f"{table.name}.{c.name}" for c in table.columns if c.name not in present]
    if missing:
        raise StoreSchemaError(
            f"the {downstream} store lacks {', '.join(missing)}: its handler's tables changed "
            f"without a migration; write one (`python -m workers migrate {downstream} --new "
            "'what changed'`, see docs/handlers.md) and start again"
        )


def write_revision(
    conn: Connection, name: str, metadata: MetaData, folder: Path, message: str, compare: bool
) -> Path | None:
    """Write a handler's next migration into `folder` (its branch, labelled `name`): the
    difference between its tables and the store's when `compare` (None, and no file, when
    there is none), else an empty one.

    The branch's first migration creates all its tables (where missing): it is compared
    with an empty store, not with one whose tables were made before migrations.
    """
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob(f"{name}_[0-9][0-9][0-9][0-9]*.py"))
    if existing:
        return _revision(conn, name, metadata, folder, message, compare, existing)
    scratch = create_engine("sqlite://")
    try:
        with scratch.begin() as empty:
            command.upgrade(config_for(revision_folders(None), empty), "heads")
            return _revision(empty, name, metadata, folder, message, compare, existing)
    finally:
        scratch.dispose()


def _revision(
    conn: Connection,
    name: str,
    metadata: MetaData,
    folder: Path,
    message: str,
    compare: bool,
    existing: list[Path],
) -> Path | None:
    config = config_for(
        revision_folders(folder), conn, metadata, [t.name for t in handler_tables(metadata)]
    )
    config.attributes.update(first=not existing, compare=compare)
    script = command.revision(
        config,
        message,
        autogenerate=compare,
        head=f"{name}@head" if existing else "base",
        branch_label=None if existing else name,
        version_path=str(folder),
        rev_id=f"{name}_{len(existing) + 1:04d}",
    )
    if not script:  # the comparison found nothing to write
        return None
    assert not isinstance(script, list)
    return Path(script.path)
