"""The Alembic environment of every bus database: migrations run on the connection that
`common.migrations` hands over (config.attributes), never on a URL of their own."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from alembic import context
from alembic.operations import ops

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "these migrations run through the bus: `python -m workers migrate` or "
        "`python -m producer migrate`, not the alembic command"
    )
tables = config.attributes.get("tables")


def _include(obj: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
    # Autogenerate looks only at the tables of the branch it writes for.
    return tables is None or kind != "table" or name in tables


def _walk(found: Iterable[Any]) -> Iterable[Any]:
    for op in found:
        yield op
        yield from _walk(getattr(op, "ops", ()))


def _shape_new_revision(_: Any, __: Any, directives: list[Any]) -> None:
    # A comparison that found nothing writes no file. A branch's first revision creates its
    # tables where missing: a store whose tables were made before its handler had migrations
    # is then adopted as it is.
    if config.attributes.get("compare") and all(d.upgrade_ops.is_empty() for d in directives):
        directives[:] = []
    if not config.attributes.get("first"):
        return
    for script in directives:
        for op in _walk(script.upgrade_ops.ops):
            if isinstance(op, ops.CreateTableOp | ops.CreateIndexOp):
                op.if_not_exists = True


context.configure(
    connection=connection,
    target_metadata=config.attributes.get("metadata"),
    include_object=_include,
    process_revision_directives=_shape_new_revision,
    # SQLite alters most things by copying the table: autogenerate writes batch operations.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
