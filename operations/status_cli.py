"""`python -m topology status [--watch] [--json] [--fail-over-lag N]`."""

from __future__ import annotations

import argparse
import asyncio
import json

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from broker.management import ManagementClient
from common.cli import EXIT_INTERRUPTED, EXIT_OVER_LAG, EXIT_UNDER_REPLICATED, duration
from common.loop import sleep_unless, stop_on_signals
from operations.status import BusStatus, DownstreamStatus, ParkedCounts, gather
from topology.commands import Command, Context
from topology.spec import TopologySpec


def _arguments(status: argparse.ArgumentParser) -> None:
    status.add_argument("--watch", action="store_true", help="refresh every --interval")
    status.add_argument(
        "--interval",
        type=duration,
        default=2.0,
        help="time between refreshes with --watch, e.g. 2s, 1m (default: 2s)",
    )
    status.add_argument(
        "--fail-over-lag",
        type=int,
        default=None,
        metavar="N",
        help=f"exit {EXIT_OVER_LAG} when any downstream's lag passes N messages (for alerting)",
    )
    status.add_argument(
        "--fail-under-replicated",
        action="store_true",
        help=f"exit {EXIT_UNDER_REPLICATED} when a shard or the log has fewer live members "
        "than the file asks for",
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
    counts = ParkedCounts()  # kept across a watch's refreshes
    status = await gather(spec, amqp_url, client, vhost, counts)
    if args.json:
        print(json.dumps(status.as_dict()))
    elif args.watch:
        # Ctrl-C (or SIGTERM) sets stop, and the watch ends between or during refreshes: a
        # cancellation could be lost inside a refresh's reads, and the watch would go on.
        stop = asyncio.Event()
        stop_on_signals(stop)
        with Live(view(status), console=out, refresh_per_second=4) as live:
            while not await sleep_unless(stop, args.interval):
                refresh = asyncio.ensure_future(gather(spec, amqp_url, client, vhost, counts))
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({refresh, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not refresh.done():
                    refresh.cancel()
                    await asyncio.wait({refresh}, timeout=5)
                    if refresh.done() and not refresh.cancelled():
                        refresh.exception()  # ending anyway: retrieved, not reported
                    break
                live.update(view(refresh.result()))
        return EXIT_INTERRUPTED
    else:
        out.print(view(status))
    err = Console(stderr=True)
    if args.fail_over_lag is not None:
        over = [r.downstream for r in status.downstreams if r.lag_messages > args.fail_over_lag]
        if over:
            err.print(f"over lag {args.fail_over_lag}: {', '.join(over)}", highlight=False)
            return EXIT_OVER_LAG
    if args.fail_under_replicated and status.short:
        short = ", ".join(r.queue for r in status.short)
        err.print(f"under-replicated: {short}", highlight=False)
        return EXIT_UNDER_REPLICATED
    return 0


def view(status: BusStatus) -> RenderableType:
    """The status table, and on a cluster its nodes, shard leaders and replica warnings."""
    parts: list[RenderableType] = [table(status.downstreams, status.vhost)]
    if len(status.nodes) > 1:
        parts.append(replica_table(status))
    groups: dict[str, list[str]] = {}
    for r in status.short:
        down = sorted(set(r.members) - set(r.online))
        why = f"not live on {', '.join(down)}" if down else f"created with {len(r.members)}"
        groups.setdefault(f"{len(r.online)} live member(s) of {r.wanted} asked ({why})", []).append(
            r.queue
        )
    for why, queues in groups.items():
        text = f"under-replicated: {len(queues)} queue(s) with {why}: {', '.join(queues)}"
        parts.append(Text(text, style="bold red"))
    return Group(*parts)


def replica_table(status: BusStatus) -> Table:
    """Each shard's (and the log's) leader and live members out of those asked for."""
    nodes = ", ".join(
        f"{n}{'' if up else ' [bold red](down)[/]'}" for n, up in status.nodes.items()
    )
    t = Table(title=f"replicas — nodes: {nodes}")
    for column in ("queue", "leader", "live / asked", "not live"):
        t.add_column(column)
    every = [r for d in status.downstreams for r in d.replicas.values()]
    for r in every + ([status.log] if status.log is not None else []):
        live = f"{len(r.online)}/{r.wanted}"
        t.add_row(
            r.queue,
            r.leader or "?",
            f"[bold red]{live}[/]" if r.short else live,
            " ".join(sorted(set(r.members) - set(r.online))),
        )
    return t


def table(rows: list[DownstreamStatus], vhost: str) -> Table:
    """The status as a table."""
    t = Table(
        title=f"vhost {vhost!r} — lag s = time to drain at the current ack rate",
        caption="retrying: copies in the retry tiers; events waiting for a predecessor are "
        "held in each downstream's store (`python -m workers waiting <d>`, bus_worker_waiting)",
    )
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
            _parked(r),
            f"[bold red]yes (> {r.scale_out_at})[/]" if r.scale_out else "no",
            _owners(r.owners),
        )
    return t


def _parked(r: DownstreamStatus) -> str:
    """The parked orders, and how old the count is when it was not read for this refresh."""
    if r.parked_orders is None:
        return "?"
    return (
        f"{r.parked_orders} ({r.parked_age_s:.0f}s ago)"
        if r.parked_age_s >= 1
        else str(r.parked_orders)
    )


def _owners(owners: dict[str, str]) -> str:
    """Shard indices grouped by the process consuming them: `0 1 → worker:inventory:4242`."""
    by_owner: dict[str, list[str]] = {}
    for shard, owner in owners.items():
        by_owner.setdefault(owner, []).append(shard.rsplit(".", 1)[1])
    return "\n".join(f"{' '.join(shards)} → {owner}" for owner, shards in by_owner.items())


STATUS = Command(
    "status", "depth, rates, lag, retries and DLQ per downstream", run, _arguments, json=True
)
