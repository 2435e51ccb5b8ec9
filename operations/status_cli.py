"""`python -m topology status [--watch] [--json] [--fail-over-lag N]`."""

from __future__ import annotations

import argparse
import asyncio
import json

from rich.console import Console
from rich.live import Live
from rich.table import Table

from operations.status import DownstreamStatus, gather
from topology.commands import Command, Context
from topology.management import ManagementClient
from topology.spec import TopologySpec

EXIT_OVER_LAG = 3


def _arguments(status: argparse.ArgumentParser) -> None:
    status.add_argument("--watch", action="store_true", help="refresh every --interval seconds")
    status.add_argument("--interval", type=float, default=2.0)
    status.add_argument("--json", action="store_true", help="one JSON document on stdout")
    status.add_argument(
        "--fail-over-lag",
        type=int,
        default=None,
        metavar="N",
        help=f"exit {EXIT_OVER_LAG} when any downstream's lag passes N messages (for alerting)",
    )


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Show the status once (or until interrupted with --watch); return the exit status."""
    with ctx.management() as client:
        return asyncio.run(_run(args, ctx.spec, ctx.amqp_url, client, ctx.vhost, ctx.out))


async def _run(
    args: argparse.Namespace,
    spec: TopologySpec,
    amqp_url: str,
    client: ManagementClient,
    vhost: str,
    out: Console,
) -> int:
    rows = await gather(spec, amqp_url, client, vhost)
    if args.json:
        print(json.dumps({"vhost": vhost, "downstreams": [r.as_dict() for r in rows]}))
    elif args.watch:
        with Live(table(rows, vhost), console=out, refresh_per_second=4) as live:
            while True:
                await asyncio.sleep(args.interval)
                rows = await gather(spec, amqp_url, client, vhost)
                live.update(table(rows, vhost))
    else:
        out.print(table(rows, vhost))
    if args.fail_over_lag is not None:
        over = [r.downstream for r in rows if r.lag_messages > args.fail_over_lag]
        if over:
            Console(stderr=True).print(
                f"over lag {args.fail_over_lag}: {', '.join(over)}", highlight=False
            )
            return EXIT_OVER_LAG
    return 0


def table(rows: list[DownstreamStatus], vhost: str) -> Table:
    """The status as a table."""
    t = Table(title=f"vhost {vhost!r} — lag s = time to drain at the current ack rate")
    for column in (
        "downstream",
        "ready",
        "unacked",
        "consumers",
        "in/s",
        "acked/s",
        "lag",
        "lag s",
        "retrying",
        "dlq",
        "parked",
        "scale out",
        "shards: owner",
    ):
        t.add_column(column, justify="left" if column == "downstream" else "right")
    for r in rows:
        t.add_row(
            r.downstream,
            str(r.ready),
            str(r.unacked),
            str(r.consumers),
            f"{r.publish_rate:g}",
            f"{r.ack_rate:g}",
            str(r.lag_messages),
            "-" if r.lag_seconds is None else f"{r.lag_seconds:g}",
            str(sum(r.retry.values())),
            str(r.dlq),
            "?" if r.parked_orders is None else str(r.parked_orders),
            f"[bold red]yes (> {r.scale_out_at})[/]" if r.scale_out else "no",
            _owners(r.owners),
        )
    return t


def _owners(owners: dict[str, str]) -> str:
    """Shard indices grouped by the process consuming them: `0 1 → worker:inventory:4242`."""
    by_owner: dict[str, list[str]] = {}
    for shard, owner in owners.items():
        by_owner.setdefault(owner, []).append(shard.rsplit(".", 1)[1])
    return "\n".join(f"{' '.join(shards)} → {owner}" for owner, shards in by_owner.items())


STATUS = Command("status", "depth, rates, lag, retries and DLQ per downstream", run, _arguments)
