"""`python -m workers migrate [all | <downstream> ...]`: upgrade the downstreams' stores to
their newest schema (workers also do this as they start), show where each store is, or
write a handler's next migration."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from alembic.util import CommandError
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from common import cli
from common.loop import run
from common.migrations import MigratedElsewhere, current, heads
from topology.service import SERVICE_FAILURES, ServiceContext
from topology.spec import TopologySpec
from workers.api import Handler, HandlerNotFound, handler_for
from workers.process.settings import WorkerSettings
from workers.store.database import make_sync_engine, sqlite_file
from workers.store.migrate import (
    StoreSchemaError,
    in_store_schema,
    migrate_store,
    revision_folders,
    write_revision,
)


class UsageError(Exception):
    """A request this command cannot carry out as asked."""


Context = ServiceContext[WorkerSettings]
# What a worker or this command can meet on starting, said in one line (never a traceback).
FAILURES: cli.Failures = {
    **SERVICE_FAILURES,
    (UsageError, HandlerNotFound, StoreSchemaError, CommandError, MigratedElsewhere): cli.lead(""),
    (SQLAlchemyError, OSError): cli.lead("a downstream store failed: "),
}


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "downstreams", nargs="*", default=["all"], help="'all' (default) or downstream names"
    )
    parser.add_argument(
        "--status",
        action="store_true",
        help="show each store's revisions beside the newest ones, and change nothing",
    )
    parser.add_argument(
        "--new",
        metavar="MESSAGE",
        help="write the handler's next migration into its revisions folder (one downstream): "
        "what its tables now define beyond its store's, for you to review",
    )
    parser.add_argument(
        "--empty",
        action="store_true",
        help="with --new: write an empty migration to fill in, without comparing",
    )


def _run_migrate(args: argparse.Namespace, ctx: Context) -> int:
    return run(_run(args, ctx.settings, ctx.spec))


MIGRATE = cli.Command[Context](
    "migrate",
    "upgrade the downstreams' stores to their newest schema (workers also do this as they "
    "start), show where each is, or write a handler's next migration",
    _run_migrate,
    _arguments,
)


async def _run(args: argparse.Namespace, settings: WorkerSettings, spec: TopologySpec) -> int:
    chosen = spec.choose(args.downstreams)
    out = Console()
    if args.new is not None:
        if len(chosen) != 1:
            raise UsageError("--new writes one handler's migration: name one downstream")
        name = chosen[0]
        handler = handler_for(name, spec.downstreams[name])
        written = await asyncio.to_thread(_write, args, settings, name, handler)
        file = f" --file {args.file}" if getattr(args, "file", None) else ""
        if written is None:
            out.print(
                f"{name}: its tables and its store's do not differ; nothing written "
                "(--empty writes a migration to fill in by hand)",
                highlight=False,
                soft_wrap=True,
            )
        else:
            then = f"review it, then run `python -m workers migrate{file} {name}`"
            out.print(f"{name}: wrote {written}; {then}", highlight=False, soft_wrap=True)
        return 0
    table = Table("downstream", "store at", "newest", "state")
    for name in chosen:
        handler = handler_for(name, spec.downstreams[name])
        table.add_row(name, *await asyncio.to_thread(_migrate, args, settings, name, handler))
    out.print(table)
    return 0


def _write(
    args: argparse.Namespace, settings: WorkerSettings, name: str, handler: Handler
) -> Path | None:
    """Write the handler's next migration, compared with its store (None: nothing to write)."""
    if handler.revisions is None:
        raise UsageError(
            f"{name}: its handler names no `revisions` folder; set one on the class "
            "(see docs/handlers.md)"
        )
    engine = make_sync_engine(name, settings.workers_dsn, settings.workers_store_dir)
    try:
        with engine.begin() as conn:
            in_store_schema(conn, name)
            return write_revision(
                conn,
                handler.name,
                handler.metadata,
                handler.revisions,
                args.new,
                compare=not args.empty,
            )
    finally:
        engine.dispose()


def _migrate(
    args: argparse.Namespace, settings: WorkerSettings, name: str, handler: Handler
) -> tuple[str, str, str]:
    """Upgrade one store (or only look, with --status): its row of the table."""
    newest = heads(revision_folders(handler.revisions))
    behind = "behind: run `python -m workers migrate`"
    file = sqlite_file(name, settings.workers_dsn, settings.workers_store_dir)
    if args.status and file is not None and not file.exists():
        return "(no store yet)", ", ".join(sorted(newest)), behind  # looking creates nothing
    engine = make_sync_engine(name, settings.workers_dsn, settings.workers_store_dir)
    try:
        with engine.begin() as conn:
            if args.status:
                in_store_schema(conn, name)
            else:
                migrate_store(conn, name, handler.metadata, handler.revisions)
            at = current(conn)
    finally:
        engine.dispose()
    state = "up to date" if newest <= at else behind
    return ", ".join(sorted(at)) or "(empty)", ", ".join(sorted(newest)), state
