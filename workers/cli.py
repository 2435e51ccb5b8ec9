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

from common.health import serve, with_process_metrics
from common.loop import stop_on_signals
from topology.service import run_service
from topology.spec import TopologySpec
from workers.app import Workers, build
from workers.migrate_cli import FAILURES
from workers.migrate_cli import build_parser as migrate_parser
from workers.migrate_cli import main as migrate_main
from workers.settings import WorkerSettings
from workers.supervisor import run_processes


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m workers",
        description=__doc__,
        epilog="`python -m workers migrate --help`: the stores' migrations",
    )
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


def parser_for(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser of a command line and the arguments it reads: `migrate`'s, or the
    workers'."""
    if argv[:1] == ["migrate"]:
        return migrate_parser(), list(argv[1:])
    return build_parser(), list(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the workers (or `migrate` their stores); return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["migrate"]:
        return migrate_main(argv[1:])
    args = build_parser().parse_args(argv)
    return run_service(
        WorkerSettings,
        args.file,
        partial(_run, args),
        FAILURES,
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
