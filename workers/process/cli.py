"""`python -m workers [run] all | <downstream> ...` (consume until SIGTERM/SIGINT),
`python -m workers migrate`, `python -m workers ready` and `python -m workers waiting <d>`:
the downstreams' workers, their stores' migrations, a healthcheck, and the events a store
holds for their predecessor."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from common import cli
from common.health import serve, with_process_metrics
from common.loop import run, stop_on_signals
from topology.service import ServiceContext, service_context
from workers.process.app import HandlerWrap, Workers, build
from workers.process.launch import WORKERS
from workers.process.migrate_cli import FAILURES, MIGRATE
from workers.process.ready import READY
from workers.process.settings import WorkerSettings
from workers.process.supervisor import run_processes
from workers.process.waiting_cli import WAITING

Context = ServiceContext[WorkerSettings]


def run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `run` (the simulation's workers take them too)."""
    parser.add_argument("downstreams", nargs="+", help="'all' or downstream names from the file")
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="serve metrics on this port (default: off)"
    )
    parser.add_argument(
        "--single-process",
        action="store_true",
        help="run every downstream in this process (default: one process each when the "
        "machine has more than one core; their metrics ports count up from --metrics-port)",
    )


def run_workers(
    args: argparse.Namespace,
    ctx: Context,
    wrap: HandlerWrap | None = None,
    program: Sequence[str] = WORKERS,
) -> int:
    """Consume until SIGTERM/SIGINT: the chosen downstreams in this process, or a child
    process each (`python <program> <d>`), their handlers wrapped by `wrap`."""
    return run(_run(args, ctx, wrap, program))


async def _run(
    args: argparse.Namespace, ctx: Context, wrap: HandlerWrap | None, program: Sequence[str]
) -> int:
    port = args.metrics_port or ctx.settings.workers_metrics_port
    chosen = ctx.spec.choose(args.downstreams)
    if not args.single_process and len(chosen) > 1 and (os.cpu_count() or 1) > 1:
        return await run_processes(chosen, ctx.file, port, program)
    registry = with_process_metrics(CollectorRegistry())
    workers: Workers | None = None
    if port:
        # Up before the stores open, so a probe sees "not connected" rather than nothing.
        serve(port, registry, lambda: workers.health() if workers else (False, False))
    workers = await build(ctx.spec, args.downstreams, ctx.settings, registry, wrap)
    stop = asyncio.Event()
    stop_on_signals(stop)
    await workers.run(stop)
    return 0


def _run_production(args: argparse.Namespace, ctx: Context) -> int:
    return run_workers(args, ctx)


RUN = cli.Command[Context](
    "run",
    "consume the downstreams' shards until SIGTERM/SIGINT (the command a line without one runs)",
    _run_production,
    run_arguments,
)


def build_parser(prog: str = "python -m workers") -> argparse.ArgumentParser:
    """The command-line parser."""
    return cli.build_parser(
        prog, __doc__, [RUN, MIGRATE, READY, WAITING], [cli.FILE, cli.JSON], default="run"
    )


def main(argv: Sequence[str] | None = None, prog: str = "python -m workers") -> int:
    """Run the workers (or `migrate` their stores); return the exit status."""
    return cli.main(build_parser(prog), argv, service_context(WorkerSettings), FAILURES)


if __name__ == "__main__":
    sys.exit(main())
