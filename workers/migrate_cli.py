"""`python -m workers migrate [all | <downstream> ...]`: upgrade the downstreams' stores to
their newest schema (workers also do this as they start), show where each store is, or
write a handler's next migration."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from alembic.util import CommandError
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from common.migrations import current, heads
from topology.service import run_service
from topology.spec import TopologySpec
from workers.handlers import Handler, HandlerNotFound, handler_for
from workers.migrate import (
    StoreSchemaError,
    in_store_schema,
    migrate_store,
    revision_folders,
    write_revision,
)
from workers.settings import WorkerSettings
from workers.store import make_sync_engine


class UsageError(Exception):
    """A request this command cannot carry out as asked."""


# What a worker or this command can meet on starting, said in one line (never a traceback).
FAILURES: dict[type[Exception] | tuple[type[Exception], ...], str] = {
    (UsageError, HandlerNotFound, StoreSchemaError, CommandError): "",
    (SQLAlchemyError, OSError): "a downstream store failed: ",
}


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(prog="python -m workers migrate", description=__doc__)
    parser.add_argument(
        "downstreams", nargs="*", default=["all"], help="'all' (default) or downstream names"
    )
    parser.add_argument("--file", type=Path, default=None, help="topology file")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return the exit status."""
    args = build_parser().parse_args(argv)
    return run_service(
        WorkerSettings,
        args.file,
        partial(_run, args),
        FAILURES,
    )


async def _run(args: argparse.Namespace, settings: WorkerSettings, spec: TopologySpec) -> int:
    chosen = spec.choose(args.downstreams)
    if args.new is not None and len(chosen) != 1:
        raise UsageError("--new writes one handler's migration: name one downstream")
    out = Console()
    table = Table("downstream", "store at", "newest", "state")
    for name in chosen:
        handler = handler_for(name, spec.downstreams[name])
        work = partial(_one, args, settings, name, handler)
        row = await asyncio.to_thread(work)
        if args.new is not None:
            then = f"review it, then run `python -m workers migrate {name}` (or start the workers)"
            out.print(f"{name}: wrote {row[0]}; {then}", highlight=False, soft_wrap=True)
            return 0
        table.add_row(name, *row)
    out.print(table)
    return 0


def _one(
    args: argparse.Namespace, settings: WorkerSettings, name: str, handler: Handler
) -> tuple[str, str, str]:
    """Migrate, show or write for one downstream: its table row (or the written file)."""
    engine = make_sync_engine(name, settings.workers_dsn, settings.workers_store_dir)
    folders = revision_folders(handler.revisions)
    try:
        with engine.begin() as conn:
            if args.new is not None:
                if handler.revisions is None:
                    raise UsageError(
                        f"{name}: its handler names no `revisions` folder; set one on the "
                        "class (see docs/handlers.md)"
                    )
                in_store_schema(conn, name)
                path = write_revision(
                    conn,
                    handler.name,
                    handler.metadata,
                    handler.revisions,
                    args.new,
                    compare=not args.empty,
                )
                return str(path), "", ""
            if not args.status:
                migrate_store(conn, name, handler.metadata, handler.revisions)
            in_store_schema(conn, name)
            at, newest = current(conn), heads(folders)
    finally:
        engine.dispose()
    state = "up to date" if at == newest else "behind: run `python -m workers migrate`"
    return ", ".join(sorted(at)) or "(empty)", ", ".join(sorted(newest)), state
