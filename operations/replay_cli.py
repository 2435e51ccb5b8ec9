"""`python -m topology replay <downstream> --since T [--until T] [--order-id X] [--reapply]`."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime

from rich.progress import Progress, TextColumn

from common.cli import EXIT_OK
from operations.replay import ReplayStats, parse_time, replay
from topology.commands import Command, Context


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("downstream")
    parser.add_argument("--since", required=True, help="ISO time or a duration ago (15m, 2h, 7d)")
    parser.add_argument("--until", default=None, help="ISO time or a duration ago (default: now)")
    parser.add_argument(
        "--order-id", default=None, help="replay only this order's events (default: every order)"
    )
    parser.add_argument(
        "--reapply",
        action="store_true",
        help="the downstream's store was wiped: workers re-read each order's progress from it",
    )


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Re-feed one downstream from the stream; return the exit status."""
    ctx.spec.downstream(args.downstream)
    try:
        since = parse_time(args.since)
        # Without an end, a busy bus would re-feed its live events for ever.
        until = parse_time(args.until) if args.until else datetime.now(UTC)
    except ValueError as exc:
        return ctx.fail(str(exc))
    log = ctx.spec.log.name
    with Progress(
        TextColumn("{task.description}"), console=ctx.err, transient=True, disable=args.json
    ) as bar:
        task = bar.add_task("replaying")

        def shown(s: ReplayStats) -> None:
            bar.update(task, description=f"read {s.read}, replayed {s.replayed}")

        stats = asyncio.run(
            replay(
                ctx.amqp_url,
                log,
                args.downstream,
                since,
                until,
                args.order_id,
                args.reapply,
                on_event=shown,
            )
        )
    if args.json:
        summary = {
            "downstream": args.downstream,
            "since": since.isoformat(),
            "until": until.isoformat(),
            "read": stats.read,
            "replayed": stats.replayed,
            "skipped": stats.skipped,
            "reapply": args.reapply,
        }
        print(json.dumps(summary))
        return EXIT_OK
    ctx.out.print(
        f"replayed {stats.replayed} event(s) to {args.downstream} from {log} "
        f"since {since.isoformat()} until {until.isoformat()} "
        f"(read {stats.read}, skipped {stats.skipped})"
        + (", marked for reapply" if args.reapply else ""),
        highlight=False,
    )
    return EXIT_OK


REPLAY = Command(
    "replay", "re-feed one downstream from the orders.log stream", run, _arguments, json=True
)
