"""`python -m producer relay | migrate`: the order service's outbox relay, and its database's
migrations."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic.util import CommandError
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from common import cli
from common.health import serve, with_process_metrics
from common.loop import run, stop_on_signals
from common.migrations import MigratedElsewhere, current, heads
from producer.db import REVISIONS, create_schema, make_engine, migrate_outbox
from producer.metrics import RelayMetrics
from producer.outbox import Outbox
from producer.relay import Relay
from producer.settings import ProducerSettings
from topology.service import SERVICE_FAILURES, ServiceContext, service_context

Context = ServiceContext[ProducerSettings]
DB = cli.Option(("--db",), "store DSN (default: $PRODUCER_DSN)")


def positive(kind: type[int] | type[float]) -> Any:
    """An argument type: a number of `kind` above 0."""

    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be more than 0")
        return value

    return parse


METRICS_PORT = cli.Option(
    ("--metrics-port",), "relay: serve metrics on this port (default: off)", {"type": int}
)
WINDOW = cli.Option(
    ("--window",),
    "relay: publishes awaiting their confirm at once (default: the file's producer.window)",
    {"type": positive(int)},
)
# The options every command takes, before or after its name.
OPTIONS = [cli.FILE, DB, METRICS_PORT, WINDOW]


def _migrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--status", action="store_true", help="show where the database is, and change nothing"
    )


def run_relay(args: argparse.Namespace, ctx: Context) -> int:
    """Publish the outbox until SIGTERM/SIGINT."""
    return run(_relay_forever(args, ctx))


def run_migrate(args: argparse.Namespace, ctx: Context) -> int:
    """Upgrade the order service's database (or only show where it is)."""
    return run(_migrate(args, ctx))


COMMANDS: list[cli.Command[Context]] = [
    cli.Command("relay", "publish the outbox until SIGTERM", run_relay),
    cli.Command(
        "migrate",
        "upgrade the order service's database to its newest schema (the relay also does this "
        "as it starts)",
        run_migrate,
        _migrate_arguments,
    ),
]
FAILURES: cli.Failures = {
    **SERVICE_FAILURES,
    (CommandError, MigratedElsewhere): cli.lead(""),
    (SQLAlchemyError, OSError): cli.lead("the order store failed: "),
}


def build_parser(prog: str = "python -m producer") -> argparse.ArgumentParser:
    """The command-line parser; the common options go before or after the command's name."""
    return cli.build_parser(prog, __doc__, COMMANDS, OPTIONS)


def main(argv: Sequence[str] | None = None, prog: str = "python -m producer") -> int:
    """Run one command; return the exit status."""
    return cli.main(build_parser(prog), argv, service_context(ProducerSettings), FAILURES)


async def _migrate(args: argparse.Namespace, ctx: Context) -> int:
    settings = ctx.settings
    dsn = make_url(args.db or settings.producer_dsn)
    at: set[str] = set()
    # Looking creates nothing: a SQLite file that is not there is reported as empty.
    if not (args.status and dsn.get_backend_name() == "sqlite" and not _exists(dsn.database)):
        engine = make_engine(dsn.render_as_string(hide_password=False))
        try:
            async with engine.begin() as conn:
                if not args.status:
                    await conn.run_sync(migrate_outbox)
                at = await conn.run_sync(current)
        finally:
            await engine.dispose()
    newest = heads([REVISIONS])
    state = "up to date" if newest <= at else "behind: run `python -m producer migrate`"
    table = Table("database at", "newest", "state")
    table.add_row(", ".join(sorted(at)) or "(empty)", ", ".join(sorted(newest)), state)
    Console().print(table)
    return 0


def _exists(database: str | None) -> bool:
    return database is not None and (database == ":memory:" or Path(database).exists())


async def build_relay(
    args: argparse.Namespace, ctx: Context
) -> tuple[AsyncEngine, Relay, asyncio.Event]:
    """The store (schema created), its relay, and a stop event that SIGTERM/SIGINT set."""
    settings, spec = ctx.settings, ctx.spec
    engine = make_engine(args.db or settings.producer_dsn)
    await create_schema(engine)
    stop = asyncio.Event()
    stop_on_signals(stop)
    registry = with_process_metrics(CollectorRegistry())
    port = args.metrics_port or settings.producer_metrics_port
    relay = Relay(
        Outbox(engine),
        settings.amqp_url,
        exchange=spec.exchange.name,
        app_id=spec.producer.app_id,
        window=args.window or spec.producer.window,
        poll_interval=spec.producer.poll_interval / 1000,
        metrics=RelayMetrics(registry),
    )
    if port:
        serve(port, registry, relay.health)
    return engine, relay, stop


async def _relay_forever(args: argparse.Namespace, ctx: Context) -> int:
    engine, relay, stop = await build_relay(args, ctx)
    try:
        await relay.run(stop)
    finally:
        await engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
