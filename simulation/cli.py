"""`python -m simulation orders | workers`: simulated orders through the outbox and the relay,
and workers with the simulation around their handlers (for the demo, the benchmarks and the
tests; the bus itself never imports this package)."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common import cli
from common.cli import duration
from common.loop import run, sleep_unless
from producer import cli as producer_cli
from producer.cli import OPTIONS, build_relay, positive
from producer.outbox import Outbox
from producer.relay import Relay
from producer.settings import ProducerSettings
from simulation.handlers import simulated
from simulation.launch import SIMULATED_WORKERS
from simulation.orders import OrderStore
from simulation.traffic import DuplicateRun, TrafficStats, run_traffic
from topology.service import ServiceContext, service_context
from workers.process import cli as workers_cli
from workers.process.migrate_cli import FAILURES as WORKER_FAILURES
from workers.process.settings import WorkerSettings

OrdersContext = ServiceContext[ProducerSettings]


class SimulatedWorkerSettings(WorkerSettings):
    """The workers' settings, and the game day's switch."""

    workers_outage_dir: Path | None = Field(
        default=None,
        description="Game-day switch: while <dir>/<downstream> exists, that downstream's handler "
        "fails every event transiently (retried through its tiers).",
    )


WorkersContext = ServiceContext[SimulatedWorkerSettings]


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _orders_arguments(sim: argparse.ArgumentParser) -> None:
    for option in OPTIONS[1:]:  # the relay's (--file is the program's)
        option.add(sim, None)
    sim.add_argument("--orders", type=positive(int), required=True, help="orders to place")
    sim.add_argument(
        "--rate", type=positive(float), default=None, help="orders per second (default: no limit)"
    )
    sim.add_argument(
        "--concurrency",
        type=positive(int),
        default=8,
        help="concurrent customers (default: %(default)s)",
    )
    sim.add_argument(
        "--seed", type=int, default=None, help="makes the orders reproducible (default: random)"
    )
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
        type=duration,
        default=300.0,
        help="how long to wait for the relay to publish the outbox, e.g. 5m (default: 300s)",
    )
    sim.add_argument("--json", action="store_true", help="print the summary as JSON")


def _run_orders(args: argparse.Namespace, ctx: OrdersContext) -> int:
    return run(_simulate(args, ctx))


def _run_workers(args: argparse.Namespace, ctx: WorkersContext) -> int:
    wrap = simulated(outage_dir=ctx.settings.workers_outage_dir)
    return workers_cli.run_workers(args, ctx, wrap, SIMULATED_WORKERS)


ORDERS = cli.Command[OrdersContext](
    "orders",
    "simulate orders through the outbox and the relay",
    _run_orders,
    _orders_arguments,
    json=True,
)
WORKERS = cli.Command[WorkersContext](
    "workers",
    "run workers with the simulation around their handlers (the file's handler_time, "
    "POISON-/FLAKY<n>- SKUs, the outage switch)",
    _run_workers,
    workers_cli.run_arguments,
)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    commands: list[cli.Command[Any]] = [ORDERS, WORKERS]
    return cli.build_parser("python -m simulation", __doc__, commands, [cli.FILE])


def _context(args: argparse.Namespace, err: Console) -> Any:
    kind = ProducerSettings if args.run is _run_orders else SimulatedWorkerSettings
    return service_context(kind)(args, err)


FAILURES: cli.Failures = {
    **producer_cli.FAILURES,
    **WORKER_FAILURES,
    DuplicateRun: cli.lead(""),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit status."""
    return cli.main(build_parser(), argv, _context, FAILURES)


async def _simulate(args: argparse.Namespace, ctx: OrdersContext) -> int:
    engine, relay, stop = await build_relay(args, ctx)
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
