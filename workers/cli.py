"""`python -m workers all | <downstream> ...`: consume until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError

from common.health import serve, with_process_metrics
from common.loop import stop_on_signals
from topology.service import run_service
from topology.spec import TopologySpec
from workers.app import Workers, build
from workers.settings import WorkerSettings
from workers.supervisor import run_processes


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("downstreams", nargs="+", help="'all' or downstream names from the file")
    parser.add_argument("--file", type=Path, default=None, help="topology file")
    parser.add_argument("--metrics-port", type=int, default=None, help="serve metrics on this port")
    parser.add_argument(
        "--single-process",
        action="store_true",
        help="run every downstream in this process (default: one process each when the "
        "machine has more than one core; their metrics ports count up from --metrics-port)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the workers; return the exit status."""
    args = build_parser().parse_args(argv)
    return run_service(
        WorkerSettings,
        args.file,
        partial(_run, args),
        {(SQLAlchemyError, OSError): "a downstream store failed: "},
    )


async def _run(args: argparse.Namespace, settings: WorkerSettings, spec: TopologySpec) -> int:
    port = args.metrics_port or settings.workers_metrics_port
    chosen = spec.choose(args.downstreams)
    if not args.single_process and len(chosen) > 1 and (os.cpu_count() or 1) > 1:
        return await run_processes(chosen, args.file, port)
    registry = with_process_metrics(CollectorRegistry())
    workers: Workers | None = None
    if port:
        # Up before the stores open, so a probe sees "not connected" rather than nothing.
        serve(port, registry, lambda: workers.health() if workers else (False, False))
    workers = await build(spec, args.downstreams, settings, registry)
    stop = asyncio.Event()
    stop_on_signals(stop)
    await workers.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
