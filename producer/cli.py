"""`python -m producer relay | simulate | migrate`: the order service's relay, simulated
traffic, and its database's migrations."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from alembic.util import CommandError
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from common.cli import either_side, file_option
from common.health import serve, with_process_metrics
from common.loop import sleep_unless, stop_on_signals
from common.migrations import current, heads
from producer.db import REVISIONS, create_schema, make_engine, migrate_outbox
from producer.metrics import RelayMetrics
from producer.outbox import Outbox
from producer.relay import Relay
from producer.settings import ProducerSettings
from producer.simulate import DuplicateRun, TrafficStats, run_traffic
from producer.store import OrderStore
from topology.service import run_service
from topology.spec import TopologySpec


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be more than 0")
        return value

    return parse


def _common(parser: argparse.ArgumentParser, default: object) -> None:
    file_option(parser, default)
    parser.add_argument("--db", default=default, help="store DSN (default: $PRODUCER_DSN)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=default,
        help="serve metrics on this port (default: off)",
    )
    parser.add_argument(
        "--window",
        type=_positive(int),
        default=default,
        help="publishes awaiting their confirm at once (default: the file's producer.window)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser; the common options go before or after the command's name."""
    parser = argparse.ArgumentParser(prog="python -m producer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    relay = sub.add_parser("relay", help="publish the outbox until SIGTERM")
    sim = sub.add_parser("simulate", help="simulate orders through the outbox and the relay")
    migrate = sub.add_parser(
        "migrate",
        help="upgrade the order service's database to its newest schema (the relay and the "
        "simulation also do this as they start)",
    )
    either_side(parser, (relay, sim), _common)
    migrate.add_argument("--db", default=None, help="store DSN (default: $PRODUCER_DSN)")
    migrate.add_argument(
        "--status", action="store_true", help="show where the database is, and change nothing"
    )
    sim.add_argument("--orders", type=_positive(int), required=True, help="orders to place")
    sim.add_argument("--rate", type=_positive(float), default=None, help="orders per second")
    sim.add_argument(
        "--concurrency",
        type=_positive(int),
        default=8,
        help="concurrent customers (default: %(default)s)",
    )
    sim.add_argument("--seed", type=int, default=None, help="makes the orders reproducible")
    sim.add_argument(
        "--flaky-rate",
        type=_fraction,
        default=0.0,
        help="share of orders with a SKU that fails, then heals (default: %(default)s)",
    )
    sim.add_argument(
        "--poison-rate",
        type=_fraction,
        default=0.0,
        help="share of orders with a SKU that never applies (default: %(default)s)",
    )
    sim.add_argument(
        "--drain-timeout",
        type=_positive(float),
        default=300.0,
        help="seconds to wait for the relay to publish the outbox (default: %(default)s)",
    )
    sim.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit status."""
    args = build_parser().parse_args(argv)
    commands = {"relay": _relay_forever, "simulate": _simulate, "migrate": _migrate}
    return run_service(
        ProducerSettings,
        getattr(args, "file", None),
        partial(commands[args.command], args),
        {
            (DuplicateRun, CommandError): "",
            (SQLAlchemyError, OSError): "the order store failed: ",
        },
    )


async def _migrate(args: argparse.Namespace, settings: ProducerSettings, _: TopologySpec) -> int:
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
    state = "up to date" if at == newest else "behind: run `python -m producer migrate`"
    table = Table("database at", "newest", "state")
    table.add_row(", ".join(sorted(at)) or "(empty)", ", ".join(sorted(newest)), state)
    Console().print(table)
    return 0


def _exists(database: str | None) -> bool:
    return database is not None and (database == ":memory:" or Path(database).exists())


async def _build(
    args: argparse.Namespace, settings: ProducerSettings, spec: TopologySpec
) -> tuple[AsyncEngine, Relay, asyncio.Event]:
    """The store (schema created), its relay, and a stop event that SIGTERM/SIGINT set."""
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


async def _relay_forever(
    args: argparse.Namespace, settings: ProducerSettings, spec: TopologySpec
) -> int:
    engine, relay, stop = await _build(args, settings, spec)
    try:
        await relay.run(stop)
    finally:
        await engine.dispose()
    return 0


async def _simulate(
    args: argparse.Namespace, settings: ProducerSettings, spec: TopologySpec
) -> int:
    engine, relay, stop = await _build(args, settings, spec)
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    relay_task = asyncio.create_task(relay.run(stop))
    started = time.monotonic()
    try:
        traffic, backlog = await _traffic(args, OrderStore(engine), relay, seed, stop)
    finally:
        stop.set()
        await relay_task
        await engine.dispose()
    elapsed = time.monotonic() - started
    _print_summary(_summary(seed, traffic, relay, backlog, elapsed), args.json)
    if backlog:
        Console(stderr=True).print(
            f"error: {backlog} event(s) still unconfirmed after {args.drain_timeout}s "
            "(they stay in the outbox; `python -m producer relay` will publish them)"
        )
        return 1
    return 0


async def _traffic(
    args: argparse.Namespace, store: OrderStore, relay: Relay, seed: int, stop: asyncio.Event
) -> tuple[TrafficStats, int]:
    """Drive the orders with progress bars; return the traffic and the outbox left unsent."""
    progress = Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        events = progress.add_task("events written", total=args.orders * 3)
        confirmed = progress.add_task("events confirmed", total=args.orders * 3)
        ticker = asyncio.create_task(_tick(progress, confirmed, relay))
        try:
            traffic = await run_traffic(
                store,
                args.orders,
                seed=seed,
                concurrency=args.concurrency,
                rate=args.rate,
                flaky_rate=args.flaky_rate,
                poison_rate=args.poison_rate,
                on_event=lambda: progress.advance(events),
            )
            backlog = await _drain(Outbox(store.engine), args.drain_timeout, stop)
        finally:
            ticker.cancel()
            progress.update(confirmed, completed=relay.stats.confirmed)
    return traffic, backlog


def _summary(
    seed: int, traffic: TrafficStats, relay: Relay, backlog: int, elapsed: float
) -> dict[str, Any]:
    return {
        "seed": seed,
        "orders": traffic.orders,
        "events": traffic.events,
        "flaky_orders": traffic.flaky_orders,
        "poison_orders": traffic.poison_orders,
        "published": relay.stats.published,
        "confirmed": relay.stats.confirmed,
        "nacked": relay.stats.nacked,
        "returned": relay.stats.returned,
        "reconnects": relay.stats.reconnects,
        "outbox_backlog": backlog,
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(traffic.events / elapsed, 1),
    }


async def _tick(progress: Progress, task: Any, relay: Relay) -> None:
    while True:
        progress.update(task, completed=relay.stats.confirmed)
        await asyncio.sleep(0.2)


async def _drain(outbox: Outbox, within: float, stop: asyncio.Event) -> int:
    """Wait until the relay has confirmed everything; return what is left."""
    deadline = time.monotonic() + within
    while (left := await outbox.backlog()) and time.monotonic() < deadline:
        if await sleep_unless(stop, 0.1):
            break
    return left


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary))
        return
    table = Table(title="simulation", show_header=False)
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), str(value))
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
