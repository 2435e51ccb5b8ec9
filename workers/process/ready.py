"""`python -m workers ready [all | <downstream> ...] --metrics-port 9102`: whether every chosen
downstream's process answers /readyz, on the ports `python -m workers all` serves them on (a
healthcheck that needs no edit when the file gains a downstream)."""

from __future__ import annotations

import argparse

import httpx

from common import cli
from topology.service import ServiceContext
from workers.process.settings import WorkerSettings

Context = ServiceContext[WorkerSettings]
DEFAULT_PORT = 9102


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "downstreams", nargs="*", default=["all"], help="'all' (default) or downstream names"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="the first downstream's metrics port; the others count up from it, as "
        "`python -m workers all --metrics-port` serves them (default: $WORKERS_METRICS_PORT, "
        f"else {DEFAULT_PORT})",
    )


def _ready(args: argparse.Namespace, ctx: Context) -> int:
    base = args.metrics_port or ctx.settings.workers_metrics_port or DEFAULT_PORT
    every = list(ctx.spec.downstreams)
    chosen = ctx.spec.choose(args.downstreams)
    not_ready = []
    for d in chosen:
        url = f"http://127.0.0.1:{base + every.index(d)}/readyz"
        try:
            answer = httpx.get(url, timeout=3)
            if answer.status_code != 200:
                not_ready.append(f"{d} ({answer.text.strip()})")
        except httpx.HTTPError as exc:
            not_ready.append(f"{d} ({type(exc).__name__})")
    if not_ready:
        print(f"not ready: {', '.join(not_ready)}")
        return cli.EXIT_ERROR
    print(f"ready: {', '.join(chosen)}")
    return cli.EXIT_OK


READY = cli.Command[Context](
    "ready",
    "exit 0 when every chosen downstream's process answers /readyz (a healthcheck)",
    _ready,
    _arguments,
)
